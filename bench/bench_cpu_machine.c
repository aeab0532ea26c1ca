#define _POSIX_C_SOURCE 200809L
#include "bench_cpu_machine.h"

#include <cblas.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static void trim(char* s) {
    size_t n = strlen(s);
    while (n && (s[n - 1] == '\n' || s[n - 1] == ' ' || s[n - 1] == '\t')) s[--n] = '\0';
}

double bench_load_average(void) {
    double load = -1.0;
    FILE* f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf", &load) != 1) load = -1.0;
        fclose(f);
    }
    return load;
}

void bench_machine_describe(bench_machine_t* m) {
    memset(m, 0, sizeof(*m));
    snprintf(m->cpu_model, sizeof(m->cpu_model), "unknown");
    FILE* f = fopen("/proc/cpuinfo", "r");
    if (f) {
        char line[512];
        while (fgets(line, sizeof(line), f)) {
            char* colon = strchr(line, ':');
            if (!strncmp(line, "model name", 10) && colon) {
                const char* v = colon + 1;
                while (*v == ' ') ++v;
                snprintf(m->cpu_model, sizeof(m->cpu_model), "%s", v);
                trim(m->cpu_model);
                break;
            }
        }
        fclose(f);
    }
    if (gethostname(m->hostname, sizeof(m->hostname) - 1) != 0)
        snprintf(m->hostname, sizeof(m->hostname), "unknown");
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    m->logical_cpus = n > 0 ? (int)n : 0;
    m->blas_threads = openblas_get_num_threads();
    snprintf(m->blas_config, sizeof(m->blas_config), "%s", openblas_get_config());
    trim(m->blas_config);
    m->load_start = m->load_end = bench_load_average();
}
