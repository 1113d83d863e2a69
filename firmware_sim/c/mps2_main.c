/* MPS2 (Cortex-M4, qemu-system-arm -M mps2-an386) harness over ARM semihosting: reads float32
 * input frames from the host file "input.bin", writes output frames to "output.bin", and the
 * SysTick ticks of each model_step to "ticks.bin" (uint32 per step, after a calibration pair).
 * Under -icount shift=0 every instruction takes the same virtual time, so ticks x (instructions
 * per tick) counts instructions. No libc. */
#include <stdint.h>
#include "model.h"

static int semihost(int op, void *arg) {
    register int r0 __asm__("r0") = op;
    register void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}
enum { SYS_OPEN = 0x01, SYS_CLOSE = 0x02, SYS_WRITE = 0x05, SYS_READ = 0x06, SYS_EXIT = 0x18 };

static int h_open(const char *name, int mode) {
    int n = 0;
    while (name[n]) n++;
    uint32_t a[3] = {(uint32_t)name, (uint32_t)mode, (uint32_t)n};
    return semihost(SYS_OPEN, a);
}
static int h_read(int fd, void *buf, int n) { uint32_t a[3] = {(uint32_t)fd, (uint32_t)buf, (uint32_t)n}; return semihost(SYS_READ, a); }
static void h_write(int fd, const void *buf, int n) { uint32_t a[3] = {(uint32_t)fd, (uint32_t)buf, (uint32_t)n}; semihost(SYS_WRITE, a); }
/* ADP_Stopped_ApplicationExit: qemu exits 0; RunTimeErrorUnknown: qemu exits 1 */
static void h_exit(int code) { semihost(SYS_EXIT, (void *)(code ? 0x20023 : 0x20026)); for (;;) {} }

#define SYST_CSR (*(volatile uint32_t *)0xE000E010)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018)

/* SysTick ticks of a loop of exactly 2 * n instructions (subs, bne): instructions per tick */
static uint32_t calibration_ticks(uint32_t n) {
    uint32_t t0 = SYST_CVR;
    __asm__ volatile("1: subs %0, %0, #1\n bne 1b" : "+r"(n) : : "cc");
    return (t0 - SYST_CVR) & 0xFFFFFF;
}

static model_state_t state;
static uint32_t ticks[256];

int main(void) {
    int in = h_open("input.bin", 0), out = h_open("output.bin", 4), tk = h_open("ticks.bin", 4);
    if (in < 0 || out < 0 || tk < 0) h_exit(2);
    SYST_RVR = 0xFFFFFF; SYST_CVR = 0; SYST_CSR = 5;   /* processor clock, no interrupt */
    uint32_t calib[2] = {200000, calibration_ticks(100000)};
    h_write(tk, calib, sizeof calib);                /* ticks.bin: instructions, ticks, then one per step */
    float x[MODEL_INPUTS], y[MODEL_OUTPUTS];
    model_init(&state);
    int k = 0;
    while (h_read(in, x, sizeof x) == 0) {          /* SYS_READ returns the bytes NOT read */
        uint32_t t0 = SYST_CVR;
        model_step(&state, x, y);
        uint32_t t1 = SYST_CVR;
        ticks[k++] = (t0 - t1) & 0xFFFFFF;           /* counts down, 24 bits */
        h_write(out, y, sizeof y);
        if (k == 256) { h_write(tk, ticks, sizeof ticks); k = 0; }
    }
    h_write(tk, ticks, k * (int)sizeof ticks[0]);
    h_exit(0);
    return 0;
}
