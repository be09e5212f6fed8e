// Instants arrive as ISO-8601 UTC strings; the wall screen shows them in the plant's local time
// (the browser's time zone: the TV hangs in the plant).

const pad = (value: number): string => String(value).padStart(2, "0");

/** Parse an ISO-8601 instant; null for null or garbage. */
export function parseInstant(text: string | null | undefined): Date | null {
  if (text === null || text === undefined || text === "") return null;
  const date = new Date(text);
  return Number.isNaN(date.getTime()) ? null : date;
}

/** "11-25 14:30" in local time. */
export function formatDateTime(date: Date): string {
  const day = `${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
  return `${day} ${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

/** "14:30:05" in local time. */
export function formatClock(date: Date): string {
  return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}

const WEEKDAYS = ["周日", "周一", "周二", "周三", "周四", "周五", "周六"];

/** "2026-11-24 周二" in local time. */
export function formatLongDate(date: Date): string {
  const weekday = WEEKDAYS[date.getDay()] ?? "";
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ${weekday}`;
}

/** A calendar date "2026-11-25" shown as "11-25" (no time zone: it is a date, not an instant). */
export function formatCalendarDate(text: string | null | undefined): string {
  if (text === null || text === undefined) return "—";
  const match = /^(\d{4})-(\d{2})-(\d{2})$/.exec(text);
  return match === null ? text : `${match[2]}-${match[3]}`;
}

/** "3 h 05 min" / "12 min" / "<1 min" until `date`; "overdue" when past. */
export function formatRemaining(date: Date, now: Date): string {
  const minutes = Math.round((date.getTime() - now.getTime()) / 60_000);
  if (minutes < 0) return "已逾期 overdue";
  if (minutes < 1) return "< 1 min";
  if (minutes < 60) return `${minutes} min`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return `${hours} h ${pad(minutes % 60)} min`;
  return `${Math.floor(hours / 24)} d ${hours % 24} h`;
}
