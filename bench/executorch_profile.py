"""Where an ExecuTorch program spends its time: the XNNPACK operators of a batch-1 call, from ExecuTorch's own
profiler (ETDump), summed by kind. This is how the float32 PReLUs and pads of the first int8 programs were found.

    python bench/executorch_profile.py gfn.int8.pte [--runs 50]

Needs the mobile extra (ExecuTorch and its devtools). Each kind's time is the sum of its operators' median times
over the runs; "Convert" operators are conversions between float32 and int8.
"""

from __future__ import annotations

import argparse
import re
import tempfile
from collections import defaultdict
from pathlib import Path

import torch
from executorch.devtools import Inspector
from executorch.runtime import Runtime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("program", type=Path, help="a .pte file written by ghostfacenets export --executorch")
    parser.add_argument("--runs", type=int, default=50, help="batch-1 calls profiled (default 50)")
    args = parser.parse_args()

    program = Runtime.get().load_program(args.program.read_bytes(), enable_etdump=True)
    forward = program.load_method("forward")
    x = torch.randn(1, 3, 112, 112)
    for _ in range(args.runs):
        forward.execute((x,))
    with tempfile.TemporaryDirectory() as tmp:
        program.write_etdump_result_to_file(f"{tmp}/run.etdp", f"{tmp}/debug.bin")
        events = Inspector(etdump_path=f"{tmp}/run.etdp").to_dataframe()
    events = events[events.event_block_name == "Execute"]
    kinds: dict[str, list[float]] = defaultdict(list)
    for name, median, delegated in zip(events.event_name, events["p50 (ms)"], events.is_delegated_op):
        if delegated:
            kinds[re.sub(r"\s*#\d+$", "", str(name))].append(float(median))
    total = {str(n): float(t) for n, t in zip(events.event_name, events["p50 (ms)"])}.get("Method::execute")
    print(f"{'operator':<48} {'count':>5} {'ms':>8}")
    for kind, times in sorted(kinds.items(), key=lambda item: -sum(item[1])):
        print(f"{kind:<48} {len(times):>5} {sum(times):>8.3f}")
    print(f"{'sum of the operators':<48} {sum(map(len, kinds.values())):>5} {sum(map(sum, kinds.values())):>8.3f}")
    if total is not None:
        print(f"{'whole call (median)':<48} {'':>5} {total:>8.3f}")


if __name__ == "__main__":
    main()
