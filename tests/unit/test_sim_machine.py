"""The simulators' process model: seeded, event-exact, a flow line with buffers and faults."""

from __future__ import annotations

import statistics
from typing import Any

import pytest

from taktline_contract.metrics import MachineState
from taktline_simulators import (
    FAULT_CODES,
    IllegalValueError,
    LineModel,
    MachineConfig,
    PlantSimConfig,
    SimulatorError,
    load_config,
)
from tests.conftest import CONFIG

NO_FAULTS = 1e9  # mean seconds between faults: none in any test's horizon


def machine(machine_id: str, **overrides: Any) -> MachineConfig:
    """A deterministic machine: 1 s cycles, no jitter, no scrap, no faults."""
    fields: dict[str, Any] = {
        "id": machine_id,
        "name": machine_id,
        "host": "127.0.0.1",
        "port": 0,
        "cycle_time_s": 1.0,
        "cycle_jitter": 0.0,
        "scrap_rate": 0.0,
        "mtbf_s": NO_FAULTS,
        "mttr_s": 1.0,
        "temperature_c": 50.0,
    }
    return MachineConfig(**(fields | overrides))


def line(*machines: MachineConfig, seed: int = 7, buffer_capacity: int = 4) -> LineModel:
    config = PlantSimConfig(
        plant="P",
        line="L",
        seed=seed,
        tick_ms=50,
        machines=machines,
        buffer_capacity=buffer_capacity,
    )
    return LineModel(config)


def demo_line(seed: int | None = None) -> LineModel:
    config = load_config(CONFIG / "simulators.yaml")
    return LineModel(config if seed is None else config.with_seed(seed))


def test_the_same_seed_gives_the_same_run() -> None:
    first, second = demo_line(), demo_line()
    first.step(900)
    second.step(900)
    assert first.snapshots() == second.snapshots()
    other = demo_line(seed=1)
    other.step(900)
    assert [s.good for s in other.snapshots().values()] != [
        s.good for s in first.snapshots().values()
    ]


def test_counters_do_not_depend_on_how_time_is_cut_into_steps() -> None:
    coarse, fine = demo_line(), demo_line()
    coarse.step(1200)
    for _ in range(24_000):
        fine.step(0.05)
    counts = [(s.good, s.scrap, s.cycle_time_ms) for s in coarse.snapshots().values()]
    assert counts == [(s.good, s.scrap, s.cycle_time_ms) for s in fine.snapshots().values()]
    assert fine.clock_s == pytest.approx(1200)


def test_demo_line_produces_at_about_its_bottleneck_rate() -> None:
    model = demo_line()
    model.step(3600)
    output = model.snapshot("M3")
    # M1 (1.6 s) is the bottleneck; faults and scrap take a few percent off 2250 parts/hour.
    assert 1800 < output.good < 2250
    assert output.scrap > 0
    assert model.snapshot("M1").good + model.snapshot("M1").scrap < 3600 / 1.6 + 1


def test_counters_only_go_up() -> None:
    model = demo_line()
    previous = model.snapshots()
    for _ in range(1800):
        model.step(1.0)
        current = model.snapshots()
        for machine_id, snapshot in current.items():
            assert snapshot.good >= previous[machine_id].good
            assert snapshot.scrap >= previous[machine_id].scrap
        previous = current


def test_reset_counters_sets_zero_and_counting_goes_on() -> None:
    model = line(machine("M1", scrap_rate=0.3))
    model.step(100.5)
    before = model.snapshot("M1")
    assert before.good + before.scrap == 100
    model.machine("M1").reset_counters()
    assert (model.snapshot("M1").good, model.snapshot("M1").scrap) == (0, 0)
    model.step(10)
    after = model.snapshot("M1")
    assert after.good + after.scrap == 10


def test_counters_wrap_modulo_2_to_the_32() -> None:
    model = line(machine("M1"))
    model.machine("M1").preset_counters(good=2**32 - 2, scrap=2**32 - 1)
    model.step(3.5)
    assert model.snapshot("M1").good == 1  # 2**32 - 2 + 3 parts
    assert model.snapshot("M1").scrap == 2**32 - 1


@pytest.mark.parametrize(("good", "scrap"), [(-1, 0), (0, 2**32)])
def test_preset_counters_must_be_uint32(good: int, scrap: int) -> None:
    with pytest.raises(IllegalValueError, match="uint32"):
        line(machine("M1")).machine("M1").preset_counters(good=good, scrap=scrap)


def test_a_full_buffer_blocks_the_machine_before_it() -> None:
    model = line(machine("M1"), machine("M2"), machine("M3"), buffer_capacity=4)
    model.machine("M2").set_run_enabled(False)
    model.step(60)
    assert model.snapshot("M1").good == 4
    assert model.buffer_levels == (4, 0)
    assert model.snapshot("M1").state is MachineState.IDLE  # blocked
    assert model.snapshot("M3").state is MachineState.IDLE  # starved
    assert (model.snapshot("M2").good, model.snapshot("M3").good) == (0, 0)

    model.machine("M2").set_run_enabled(True)
    model.step(10.5)
    assert model.snapshot("M2").good == 10
    assert model.snapshot("M3").good == 9  # one cycle behind M2
    assert model.snapshot("M1").good == 4 + 10  # unblocked the moment M2 took a part


def test_parts_are_conserved_along_the_line() -> None:
    model = demo_line()
    for _ in range(600):
        model.step(1.0)
        snapshots = list(model.snapshots().values())
        for upstream, buffer, downstream in zip(
            snapshots, model.buffer_levels, snapshots[1:], strict=False
        ):
            taken = downstream.good + downstream.scrap + buffer
            # The downstream machine may hold one part in its current cycle.
            assert taken <= upstream.good <= taken + 1
            assert buffer <= model.config.buffer_capacity


def test_a_slow_machine_sets_the_line_rate() -> None:
    model = line(machine("M1"), machine("M2", cycle_time_s=2.0), machine("M3"))
    model.step(200)
    assert model.snapshot("M3").good == pytest.approx(100, abs=2)
    assert model.snapshot("M1").good == pytest.approx(100 + 4 + 1, abs=2)  # + the full buffer


def test_faults_put_a_machine_down_and_it_recovers() -> None:
    model = line(machine("M1", mtbf_s=5.0, mttr_s=2.0))
    states: list[MachineState] = []
    codes: set[int] = set()
    for _ in range(2000):
        before = model.snapshot("M1")
        model.step(0.1)
        after = model.snapshot("M1")
        states.append(after.state)
        if after.state is MachineState.DOWN:
            codes.add(after.fault_code)
            if before.state is MachineState.DOWN:
                assert after.good == before.good  # nothing is produced while down
        else:
            assert after.fault_code == 0
    down = states.count(MachineState.DOWN) / len(states)
    assert 0.15 < down < 0.45  # mttr / (mtbf + mttr) = 0.29
    assert codes <= set(FAULT_CODES)
    assert len(codes) > 1
    recovered = [
        i for i in range(1, len(states))
        if states[i - 1] is MachineState.DOWN and states[i] is MachineState.RUNNING
    ]  # fmt: skip
    assert len(recovered) > 5


def test_faults_only_strike_while_running() -> None:
    model = line(machine("M1", mtbf_s=1.0, mttr_s=1.0))
    model.machine("M1").set_run_enabled(False)
    for _ in range(100):
        model.step(1.0)
        assert model.snapshot("M1").state is MachineState.IDLE


def test_speed_zero_holds_the_machine_even_mid_cycle() -> None:
    model = line(machine("M1"))
    model.step(10.5)
    assert model.snapshot("M1").state is MachineState.RUNNING
    model.machine("M1").set_speed(0)
    model.step(100)
    assert model.snapshot("M1").state is MachineState.IDLE
    assert model.snapshot("M1").good == 10
    model.machine("M1").set_speed(100)
    model.step(0.5)  # the held cycle had half of its work left
    assert model.snapshot("M1").good == 11
    assert model.snapshot("M1").cycle_time_ms == 1000  # held time is not cycle time


def test_speed_200_doubles_the_rate_and_halves_the_cycle_time() -> None:
    model = line(machine("M1", cycle_jitter=0.05))
    model.step(500)
    at_100 = model.snapshot("M1").good
    model.machine("M1").set_speed(200)
    model.step(500)
    at_200 = model.snapshot("M1").good - at_100
    assert at_200 / at_100 == pytest.approx(2.0, rel=0.05)
    assert model.snapshot("M1").cycle_time_ms == pytest.approx(500, rel=0.2)


def test_run_disable_stops_after_the_current_cycle() -> None:
    model = line(machine("M1"))
    model.step(0.5)
    model.machine("M1").set_run_enabled(False)
    assert model.snapshot("M1").state is MachineState.RUNNING
    model.step(0.6)
    assert model.snapshot("M1").good == 1
    assert model.snapshot("M1").state is MachineState.IDLE
    model.step(60)
    assert model.snapshot("M1").good == 1
    assert model.snapshot("M1").run_enabled is False


def test_scrap_follows_the_scrap_rate() -> None:
    model = line(machine("M1", scrap_rate=0.2))
    model.step(5000.5)
    snapshot = model.snapshot("M1")
    assert snapshot.good + snapshot.scrap == 5000
    assert snapshot.scrap / 5000 == pytest.approx(0.2, abs=0.03)


def test_cycle_time_jitters_around_nominal() -> None:
    model = line(machine("M1", cycle_time_s=1.5, cycle_jitter=0.05))
    samples = []
    for _ in range(400):
        model.step(1.5)
        samples.append(model.snapshot("M1").cycle_time_ms)
    assert statistics.mean(samples) == pytest.approx(1500, rel=0.02)
    assert 30 < statistics.stdev(samples) < 120  # 5 % of 1500 ms = 75 ms


def test_temperature_drifts_around_its_set_point_and_runs_hotter() -> None:
    model = line(machine("M1", temperature_c=180.0))
    running = []
    for _ in range(600):
        model.step(1.0)
        running.append(model.snapshot("M1").temperature_c)
    model.machine("M1").set_speed(0)
    model.step(300)  # ten time constants to cool down
    idle = []
    for _ in range(600):
        model.step(1.0)
        idle.append(model.snapshot("M1").temperature_c)
    assert statistics.mean(idle) == pytest.approx(180.0, abs=0.5)
    assert statistics.mean(running[200:]) > statistics.mean(idle) + 3
    assert max(abs(t - 180.0) for t in idle) < 3
    assert statistics.stdev(idle) > 0.05  # it does move


@pytest.mark.parametrize("seconds", [-1.0, float("nan"), float("inf")])
def test_step_rejects_impossible_durations(seconds: float) -> None:
    with pytest.raises(SimulatorError, match="cannot step"):
        line(machine("M1")).step(seconds)


@pytest.mark.parametrize("speed", [-1, 1001])
def test_speed_is_limited_to_0_to_1000_percent(speed: int) -> None:
    with pytest.raises(IllegalValueError, match="speed"):
        line(machine("M1")).machine("M1").set_speed(speed)


def test_unknown_machine_is_an_error() -> None:
    with pytest.raises(SimulatorError, match="no machine 'M9'"):
        line(machine("M1")).snapshot("M9")
