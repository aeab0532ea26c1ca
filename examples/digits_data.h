/* The 8x8 digits data set (examples/data/digits.csv): 64 pixels 0..16 and a label per row. */
#ifndef FNGD_EX_DIGITS_DATA_H
#define FNGD_EX_DIGITS_DATA_H

#include <stddef.h>

#define DIGITS_PIXELS 64
#define DIGITS_CLASSES 10

typedef struct digits {
    int n;    /* number of samples */
    float* x; /* n x 64, pixels scaled to [0, 1] */
    int* y;   /* n labels in 0..9 */
} digits_t;

/* Read the CSV at `path`. Returns 0 on success; else nonzero with a message in msg. */
int digits_load(const char* path, digits_t* d, char* msg, size_t msg_len);
void digits_free(digits_t* d);

#endif
