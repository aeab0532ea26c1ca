/* What the CPU benchmark ran on: CPU model (/proc/cpuinfo), logical CPUs, BLAS threads. */
#ifndef FNGD_BENCH_CPU_MACHINE_H
#define FNGD_BENCH_CPU_MACHINE_H

typedef struct bench_machine {
    char cpu_model[256];
    char hostname[128];
    char blas_config[256];
    int logical_cpus;
    int blas_threads;
    double load_start, load_end; /* 1-minute load average before and after (other work) */
} bench_machine_t;

void bench_machine_describe(bench_machine_t* m);
/* 1-minute load average from /proc/loadavg, or -1 if unavailable. */
double bench_load_average(void);

#endif
