// Small DOM helpers: build elements once, then change only the text that changed, so live updates
// never re-create nodes (no flicker, no lost focus, cheap on a TV's browser).

type Attributes = Record<string, string>;

/** Create an element with a class and attributes, and optional children. */
export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className = "",
  attributes: Attributes = {},
  children: (Node | string)[] = [],
): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  if (className !== "") element.className = className;
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, value);
  for (const child of children) element.append(child);
  return element;
}

/** Set text if different; returns whether it changed. */
export function setText(element: Element, text: string): boolean {
  if (element.textContent === text) return false;
  element.textContent = text;
  return true;
}

/** Set text and, when it changed (not on first fill), play the highlight animation. */
export function setTextFlash(element: HTMLElement, text: string): boolean {
  const first = element.textContent === "";
  const changed = setText(element, text);
  if (changed && !first) flash(element);
  return changed;
}

/** Replay the CSS "flash" animation on an element. */
export function flash(element: HTMLElement): void {
  element.classList.remove("flash");
  // Reading layout restarts the animation when the class comes back.
  void element.offsetWidth;
  element.classList.add("flash");
}

/** Set an attribute if different. */
export function setAttr(element: Element, name: string, value: string): void {
  if (element.getAttribute(name) !== value) element.setAttribute(name, value);
}

/** Find a required element by id in the page skeleton. */
export function byId<T extends HTMLElement = HTMLElement>(id: string): T {
  const element = document.getElementById(id);
  if (element === null) throw new Error(`taktline: page skeleton lacks #${id}`);
  return element as T;
}
