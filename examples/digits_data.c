#include "digits_data.h"

#include <stdio.h>
#include <stdlib.h>

/* Parse one row of 65 comma-separated integers. Returns 0 on success, -1 at end of file,
 * 1 for a malformed row. */
static int read_row(FILE* f, int vals[DIGITS_PIXELS + 1]) {
    for (int k = 0; k <= DIGITS_PIXELS; ++k) {
        double v;
        int r = fscanf(f, k == 0 ? " %lf" : " ,%lf", &v);
        if (r == EOF && k == 0) return -1;
        if (r != 1) return 1;
        vals[k] = (int)v;
        if ((double)vals[k] != v) return 1;
    }
    return 0;
}

int digits_load(const char* path, digits_t* d, char* msg, size_t msg_len) {
    d->n = 0;
    d->x = NULL;
    d->y = NULL;
    FILE* f = fopen(path, "r");
    if (!f) {
        snprintf(msg, msg_len, "cannot open %s (pass --data PATH)", path);
        return 1;
    }
    int cap = 2048, rc = 0, vals[DIGITS_PIXELS + 1];
    d->x = malloc((size_t)cap * DIGITS_PIXELS * sizeof(float));
    d->y = malloc((size_t)cap * sizeof(int));
    if (!d->x || !d->y) {
        snprintf(msg, msg_len, "out of memory");
        rc = 1;
        goto done;
    }
    for (;;) {
        int r = read_row(f, vals);
        if (r < 0) break;
        int bad = r != 0 || vals[DIGITS_PIXELS] < 0 || vals[DIGITS_PIXELS] >= DIGITS_CLASSES;
        for (int k = 0; k < DIGITS_PIXELS && !bad; ++k) bad = vals[k] < 0 || vals[k] > 16;
        if (bad) {
            snprintf(msg, msg_len, "%s: malformed row %d", path, d->n + 1);
            rc = 1;
            goto done;
        }
        if (d->n == cap) {
            cap *= 2;
            float* nx = realloc(d->x, (size_t)cap * DIGITS_PIXELS * sizeof(float));
            if (nx) d->x = nx;
            int* ny = realloc(d->y, (size_t)cap * sizeof(int));
            if (ny) d->y = ny;
            if (!nx || !ny) {
                snprintf(msg, msg_len, "out of memory");
                rc = 1;
                goto done;
            }
        }
        for (int k = 0; k < DIGITS_PIXELS; ++k)
            d->x[(size_t)d->n * DIGITS_PIXELS + k] = (float)vals[k] / 16.0f;
        d->y[d->n++] = vals[DIGITS_PIXELS];
    }
    if (d->n == 0) {
        snprintf(msg, msg_len, "%s: no samples", path);
        rc = 1;
    }
done:
    fclose(f);
    if (rc) digits_free(d);
    return rc;
}

void digits_free(digits_t* d) {
    free(d->x);
    free(d->y);
    d->x = NULL;
    d->y = NULL;
    d->n = 0;
}
