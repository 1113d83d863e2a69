/* Host harness: float32 input frames (MODEL_INPUTS floats each, native byte order) on stdin or from
 * the file named by argv[1]; float32 output frames (MODEL_OUTPUTS floats) on stdout. */
#include <stdio.h>
#include "model.h"

int main(int argc, char **argv) {
    FILE *in = argc > 1 ? fopen(argv[1], "rb") : stdin;
    if (!in) { fprintf(stderr, "model: cannot open %s\n", argv[1]); return 2; }
    static model_state_t state;
    float x[MODEL_INPUTS], y[MODEL_OUTPUTS];
    model_init(&state);
    while (fread(x, sizeof x, 1, in) == 1) {
        model_step(&state, x, y);
        fwrite(y, sizeof y, 1, stdout);
    }
    return 0;
}
