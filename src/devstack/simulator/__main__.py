"""``python -m devstack.simulator --scenario PATH [--port N]``: the simulated Mercado Libre API, standalone."""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading

from devstack.simulator.scenario import ScenarioError, load_scenario
from devstack.simulator.server import MeliSimulator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.simulator", description=__doc__)
    parser.add_argument("--scenario", default="scenarios/default.json", help="scenario JSON file (DESIGN §4)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--timeout-hold", type=float, default=10.0, help="seconds a 'timeout' fault holds a request")
    args = parser.parse_args(argv)
    try:
        scenario = load_scenario(args.scenario)
    except ScenarioError as exc:
        print(exc, file=sys.stderr)
        return 2
    with MeliSimulator(scenario, host=args.host, port=args.port, timeout_hold_seconds=args.timeout_hold) as sim:
        print(sim.url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
