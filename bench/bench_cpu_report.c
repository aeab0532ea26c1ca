#include "bench_cpu_report.h"

#include <stdio.h>

static const char* method_name(fngd_gram_method_t m) {
    return m == FNGD_GRAM_MATERIALIZE ? "materialize" : m == FNGD_GRAM_POSITION ? "position" : "auto";
}

static void row(const char* name, const char* shape, const char* method, const bench_timing_t* t) {
    const bench_stats_t *w = &t->wall, *c = &t->cpu;
    printf("  %-8s %-26s %-11s %9.3f %9.3f %9.3f %7.2fx %7.2fx %7.2fx %7.2fx\n", name, shape,
           method, w->sgd_ms, w->collect_ms, w->reuse_ms, w->collect_ratio, w->reuse_ratio,
           c->collect_ratio, c->reuse_ratio);
}

static const char* verdict(double ratio, double target) {
    return ratio <= target ? "MET" : "MISSED";
}

void bench_print_table(const bench_case_result_t* r) {
    const bench_case_t* c = r->c;
    printf("\n%s (N = %d): %s\n", c->name, c->N, c->description);
    printf("  %-8s %-26s %-11s %9s %9s %9s | %-15s | %-15s\n", "", "", "", "wall ms", "", "",
           "wall ratios", "CPU-time ratios");
    printf("  %-8s %-26s %-11s %9s %9s %9s %8s %8s %8s %8s\n", "layer", "shape", "gram", "SGD",
           "collect", "reuse", "coll/SGD", "reuse/SGD", "coll/SGD", "reuse/SGD");
    char shape[64];
    for (int l = 0; r->has_layers && l < c->nlayers; ++l) {
        bench_layer_shape(&c->descs[l], shape, sizeof(shape));
        row(c->layer_names[l], shape, method_name(r->method[l]), &r->layer[l]);
    }
    row("step", "all layers, one handle", "", &r->all);
    const bench_stats_t *w = &r->all.wall, *u = &r->all.cpu;
    printf("  targets (reuse <= %.2fx, collect <= %.1fx): wall reuse %.2fx %s, collect %.2fx %s; "
           "CPU time reuse %.2fx %s, collect %.2fx %s\n",
           BENCH_TARGET_REUSE, BENCH_TARGET_COLLECT, w->reuse_ratio,
           verdict(w->reuse_ratio, BENCH_TARGET_REUSE), w->collect_ratio,
           verdict(w->collect_ratio, BENCH_TARGET_COLLECT), u->reuse_ratio,
           verdict(u->reuse_ratio, BENCH_TARGET_REUSE), u->collect_ratio,
           verdict(u->collect_ratio, BENCH_TARGET_COLLECT));
}

/* JSON string: the values written here are ours or from /proc/cpuinfo; escape what JSON needs. */
static void json_str(FILE* f, const char* s) {
    fputc('"', f);
    for (; *s; ++s) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') fprintf(f, "\\%c", ch);
        else if (ch < 0x20) fprintf(f, "\\u%04x", ch);
        else fputc(ch, f);
    }
    fputc('"', f);
}

static void json_stats(FILE* f, const char* key, const bench_stats_t* t) {
    fprintf(f, "\"%s\": {\"sgd_ms\": %.6g, \"collect_ms\": %.6g, \"reuse_ms\": %.6g, "
               "\"collect_over_sgd\": %.4f, \"reuse_over_sgd\": %.4f, "
               "\"reuse_target_met\": %s, \"collect_target_met\": %s}",
            key, t->sgd_ms, t->collect_ms, t->reuse_ms, t->collect_ratio, t->reuse_ratio,
            t->reuse_ratio <= BENCH_TARGET_REUSE ? "true" : "false",
            t->collect_ratio <= BENCH_TARGET_COLLECT ? "true" : "false");
}

static void json_timing(FILE* f, const bench_timing_t* t) {
    json_stats(f, "wall", &t->wall);
    fprintf(f, ", ");
    json_stats(f, "cpu_time", &t->cpu);
}

int bench_write_json(const char* path, const bench_machine_t* m, const bench_settings_t* s,
                     const bench_case_result_t* results, int nresults, double total_s) {
    FILE* f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "cannot write %s\n", path);
        return 1;
    }
    int major = 0, minor = 0, patch = 0;
    fngd_get_version(&major, &minor, &patch);
    fprintf(f, "{\n  \"benchmark\": \"fngd_bench_cpu\",\n  \"libfngd_version\": \"%d.%d.%d\",\n",
            major, minor, patch);
    fprintf(f, "  \"machine\": {\"cpu_model\": ");
    json_str(f, m->cpu_model);
    fprintf(f, ", \"hostname\": ");
    json_str(f, m->hostname);
    fprintf(f, ", \"logical_cpus\": %d, \"blas_threads\": %d, \"blas_config\": ", m->logical_cpus,
            m->blas_threads);
    json_str(f, m->blas_config);
    fprintf(f, ", \"load_average_1min_start\": %.2f, \"load_average_1min_end\": %.2f",
            m->load_start, m->load_end);
    fprintf(f, "},\n  \"settings\": {\"warmup\": %d, \"repeats\": %d, "
               "\"statistic\": \"median; ratios: median of paired FNGD/SGD step ratios\", "
               "\"clocks\": \"wall (CLOCK_MONOTONIC) and process CPU time\", "
               "\"cache_flush_bytes\": %zu, \"check_finite\": %d, \"coef_mode\": \"per_layer\", "
               "\"output\": \"apply_sgd\"},\n",
            s->warmup, s->repeats, s->flusher->n * sizeof(float), s->check_finite);
    fprintf(f, "  \"targets\": {\"reuse_over_sgd\": %.2f, \"collect_over_sgd\": %.2f},\n",
            BENCH_TARGET_REUSE, BENCH_TARGET_COLLECT);
    fprintf(f, "  \"total_seconds\": %.1f,\n  \"cases\": [\n", total_s);
    for (int k = 0; k < nresults; ++k) {
        const bench_case_result_t* r = &results[k];
        const bench_case_t* c = r->c;
        fprintf(f, "    {\"name\": ");
        json_str(f, c->name);
        fprintf(f, ", \"description\": ");
        json_str(f, c->description);
        fprintf(f, ", \"batch\": %d, \"repeats\": %d,\n     \"step\": {", c->N,
                s->repeats * c->repeat_factor);
        json_timing(f, &r->all);
        fprintf(f, "},\n     \"layers\": [");
        for (int l = 0; l < c->nlayers; ++l) {
            char shape[64];
            bench_layer_shape(&c->descs[l], shape, sizeof(shape));
            fprintf(f, "%s\n       {\"name\": ", l ? "," : "");
            json_str(f, c->layer_names[l]);
            fprintf(f, ", \"shape\": ");
            json_str(f, shape);
            if (r->has_layers) {
                fprintf(f, ", \"gram_method\": \"%s\", ", method_name(r->method[l]));
                json_timing(f, &r->layer[l]);
            }
            fprintf(f, "}");
        }
        fprintf(f, "]}%s\n", k + 1 < nresults ? "," : "");
    }
    fprintf(f, "  ]\n}\n");
    if (fclose(f) != 0) {
        fprintf(stderr, "error writing %s\n", path);
        return 1;
    }
    return 0;
}
