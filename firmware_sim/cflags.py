"""Compiler flags of every build of an exported model (host and Cortex-M4), shared by `edge export-c`
and the QEMU runner so the two compile the same code."""
CFLAGS = "-std=c99 -O2 -Wall -ffp-contract=off -fno-math-errno"
M4_FLAGS = "-mcpu=cortex-m4 -mthumb -mfloat-abi=hard -mfpu=fpv4-sp-d16"
