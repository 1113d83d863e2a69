"""Build the exported C step for the host and for Cortex-M4, read flash/RAM from the linker map,
run it under qemu-system-arm (MPS2 AN386 board, semihosting) and count instructions per step.

Instruction counting: with ``-icount shift=0`` QEMU advances its virtual clock by exactly 1 ns
per guest instruction, and the SysTick (processor clock source) counts that virtual time. The
harness first times a loop of exactly 200,000 instructions (``subs``/``bne``) to get instructions
per tick (40 on this board: a 25 MHz SysTick against 1 GHz of instructions), then reads the
SysTick around every ``model_step``; instructions per step = ticks × that ratio (±40).
QEMU does not model the M4's pipeline: the count is of instructions, which `edge fit` takes as
the cycle estimate (an M4 retires about one instruction per cycle, more for loads and divides).
"""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from edge.firmware_sim.cflags import CFLAGS, M4_FLAGS

QEMU = ["qemu-system-arm", "-M", "mps2-an386", "-nographic", "-monitor", "none",
        "-semihosting-config", "enable=on,target=native", "-icount", "shift=0"]
M4_SOURCES = ("model.c", "edge_int.c", "mps2_main.c", "startup_m4.c")
WEIGHT_SECTIONS = (".rodata.W8", ".rodata.W16", ".rodata.W32", ".rodata.WF", ".rodata.INIT")


def tool_missing(need=("gcc", "arm-none-eabi-gcc", "qemu-system-arm")) -> str | None:
    """None, or a line naming the missing tools and the Debian packages that have them."""
    pkgs = {"gcc": "gcc", "arm-none-eabi-gcc": "gcc-arm-none-eabi libnewlib-arm-none-eabi",
            "qemu-system-arm": "qemu-system-arm"}
    gone = [t for t in need if shutil.which(t) is None]
    return None if not gone else f"{', '.join(gone)} not found (apt-get install {' '.join(pkgs[t] for t in gone)})"


def _run(cmd, cwd, **kw):
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, **kw)
    if r.returncode != 0:
        err = r.stderr.decode(errors="replace") if isinstance(r.stderr, bytes) else r.stderr
        raise RuntimeError(f"{cmd[0]} failed ({r.returncode}) in {cwd}: {err.strip()[-2000:]}")
    return r


def build_host(d) -> Path:
    d = Path(d)
    _run(["gcc", *CFLAGS.split(), "-o", "model_host", "model.c", "edge_int.c", "host_main.c", "-lm"], d)
    return d / "model_host"


def run_host(d, x: np.ndarray, outputs: int) -> np.ndarray:
    """x [T, C] float32 through the host build -> y [T, outputs]."""
    out = _run([str(Path(d) / "model_host")], d, input=np.ascontiguousarray(x, np.float32).tobytes()).stdout
    return np.frombuffer(out, np.float32).reshape(-1, outputs)


def parse_map(text: str) -> dict:
    """Output sections and input sections (by name) with their sizes, from a GNU ld map."""
    sections, inputs = {}, {}
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^(\.\S+)\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)", line)
        if m:
            sections[m.group(1)] = int(m.group(3), 16)
            continue
        m = re.match(r"^ (\.\S+)(?:\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+(\S+))?\s*$", line)
        if m:
            size, obj = (m.group(3), m.group(4)) if m.group(3) else (None, None)
            if size is None and i + 1 < len(lines):  # a long name: address, size, file on the next line
                m2 = re.match(r"^\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+(\S+)", lines[i + 1])
                if m2:
                    size, obj = m2.group(2), m2.group(3)
            if size is not None:
                key = (m.group(1), Path(obj).name)
                inputs[key] = inputs.get(key, 0) + int(size, 16)
    return {"sections": sections, "inputs": inputs}


def build_m4(d) -> dict:
    """Cross-compile; exact flash and RAM bytes from the map, and model_step's stack frame."""
    d = Path(d)
    objs = []
    for src in M4_SOURCES:
        obj = Path(src).with_suffix(".o").name
        _run(["arm-none-eabi-gcc", *CFLAGS.split(), *M4_FLAGS.split(), "-ffreestanding", "-ffunction-sections",
              "-fdata-sections", "-fstack-usage", "-c", src, "-o", obj], d)
        objs.append(obj)
    _run(["arm-none-eabi-gcc", *M4_FLAGS.split(), "-nostdlib", "-T", "mps2_m4.ld", "-Wl,-Map=model_m4.map",
          "-Wl,--gc-sections", "-o", "model_m4.elf", *objs, "-lgcc"], d)
    mp = parse_map((d / "model_m4.map").read_text())
    s = mp["sections"]
    text = s.get(".isr_vector", 0) + s.get(".text", 0) + s.get(".ARM.exidx", 0)
    data, bss, stack = s.get(".data", 0), s.get(".bss", 0), s.get(".stack", 0)
    weights = sum(v for (name, obj), v in mp["inputs"].items() if obj == "model.o" and name in WEIGHT_SECTIONS)
    su = (d / "model.su").read_text()
    frame = int(re.search(r":model_step\s+(\d+)", su).group(1))
    return {"flash": text + data, "text": text, "data": data, "bss": bss, "stack": stack, "ram": data + bss + stack,
            "weights": weights, "step_stack": frame, "elf": str(d / "model_m4.elf")}


def run_qemu(d, x: np.ndarray, outputs: int, timeout: float = 300) -> dict:
    """Run x [T, C] float32 through the Cortex-M4 build under QEMU: outputs and instructions."""
    d = Path(d)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "input.bin").write_bytes(np.ascontiguousarray(x, np.float32).tobytes())
        r = subprocess.run([*QEMU, "-kernel", str((d / "model_m4.elf").resolve())], cwd=tmp, capture_output=True,
                           timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"qemu-system-arm exited {r.returncode}: {r.stderr.decode(errors='replace')[-500:]}")
        y = np.fromfile(Path(tmp) / "output.bin", np.float32).reshape(-1, outputs)
        ticks = np.fromfile(Path(tmp) / "ticks.bin", np.uint32)
    per_tick = ticks[0] / ticks[1]
    steps = ticks[2:].astype(np.float64) * per_tick
    return {"y": y, "instructions": steps, "instructions_per_tick": per_tick,
            "instructions_per_step": float(np.median(steps))}
