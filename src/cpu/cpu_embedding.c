/* EMBEDDING layers on the CPU (METHOD.md section 4, "Embedding"). A sample's gradient is
 * sparse: row v of it is S_iv = sum of e_it over the sample's tokens t with id v. So
 *   K_ij = sum_v <S_iv, S_jv> = sum over token pairs (t, s) with id[i,t] = id[j,s] of <e_it, e_js>,
 * formed without any V x D per-sample gradient: the N*T (id, sample, token) records are sorted,
 * the tokens of one (id, sample) are summed into one row S, and each run of rows with the same
 * id adds its Gram (a SYRK of the run) into K. Cost O(NT log NT + NT D + sum_v n_v^2 D) with n_v
 * the number of samples holding id v. The weighted reduction is a scatter-add of
 * scale * alpha_i * e_it into row id[i,t] of the (zeroed) direction. Ids < 0 (padding) are
 * skipped; an id >= num_embeddings fails the op. */
#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_internal.h"

typedef struct {
    int64_t id;
    int32_t i, t;
} emb_rec_t;

static int cmp_rec(const void* a, const void* b) {
    const emb_rec_t* x = (const emb_rec_t*)a;
    const emb_rec_t* y = (const emb_rec_t*)b;
    if (x->id != y->id) return x->id < y->id ? -1 : 1;
    if (x->i != y->i) return x->i < y->i ? -1 : 1;
    return (x->t > y->t) - (x->t < y->t);
}

size_t cpu_embedding_gram_bytes(const fngd_layer_t* layer, int N) {
    const size_t nt = (size_t)N * (size_t)layer->T;
    return cpu_ws_piece(nt * sizeof(emb_rec_t) / sizeof(float)) +
           cpu_ws_piece(nt * (size_t)layer->q) + cpu_ws_piece(nt);
}

static fngd_status_t check_ids(const fngd_layer_t* layer, const int64_t* ids, int N,
                               fngd_err_t* err) {
    const int64_t nt = (int64_t)N * layer->T, V = layer->desc.num_embeddings;
    for (int64_t k = 0; k < nt; ++k)
        FNGD_REQUIRE(err, ids[k] < V, FNGD_ERROR_INVALID_ARGUMENT,
                     "embedding: token id %lld (sample %lld, token %lld) is >= num_embeddings "
                     "= %lld",
                     (long long)ids[k], (long long)(k / layer->T), (long long)(k % layer->T),
                     (long long)V);
    return FNGD_SUCCESS;
}

fngd_status_t cpu_embedding_gram(const fngd_layer_t* layer, const fngd_layer_batch_t* batch,
                                 int N, float scale, float* K, int accumulate, void* ws,
                                 fngd_err_t* err) {
    const int T = layer->T, D = layer->q;
    const int64_t* ids = (const int64_t*)(const void*)batch->input;
    FNGD_TRY(check_ids(layer, ids, N, err));
    cpu_ws_t w = {(char*)ws};
    const size_t nt = (size_t)N * (size_t)T;
    emb_rec_t* rec = (emb_rec_t*)(void*)cpu_ws_take(&w, nt * sizeof(emb_rec_t) / sizeof(float));
    float* S = cpu_ws_take(&w, nt * (size_t)D);
    int32_t* row_sample = (int32_t*)(void*)cpu_ws_take(&w, nt);
    size_t n = 0;
    for (int i = 0; i < N; ++i)
        for (int t = 0; t < T; ++t) {
            const int64_t id = ids[(int64_t)i * T + t];
            if (id < 0) continue; /* padding */
            rec[n].id = id;
            rec[n].i = i;
            rec[n].t = t;
            ++n;
        }
    qsort(rec, n, sizeof *rec, cmp_rec);
    if (!accumulate) memset(K, 0, (size_t)N * (size_t)N * sizeof(float));
    const float s2 = scale * scale;
    size_t k = 0;
    while (k < n) {
        /* one run of equal ids: rows S[r] per sample holding the id */
        const int64_t id = rec[k].id;
        int rows = 0;
        while (k < n && rec[k].id == id) {
            const int i = rec[k].i;
            float* s = S + (size_t)rows * D;
            memset(s, 0, (size_t)D * sizeof(float));
            while (k < n && rec[k].id == id && rec[k].i == i) {
                const float* e = batch->grad_output + ((int64_t)i * T + rec[k].t) * D;
                for (int c = 0; c < D; ++c) s[c] += e[c];
                ++k;
            }
            row_sample[rows++] = i;
        }
        for (int a = 0; a < rows; ++a) {
            const float* sa = S + (size_t)a * D;
            const int ia = row_sample[a];
            for (int b = a; b < rows; ++b) {
                const float v = s2 * cblas_sdot(D, sa, 1, S + (size_t)b * D, 1);
                const int ib = row_sample[b];
                K[(int64_t)ia * N + ib] += v;
                if (ia != ib) K[(int64_t)ib * N + ia] += v;
            }
        }
    }
    return FNGD_SUCCESS;
}

fngd_status_t cpu_embedding_reduce(const fngd_layer_t* layer, const fngd_layer_batch_t* batch,
                                   int N, const float* alpha, float scale, float* out_w,
                                   fngd_err_t* err) {
    const int T = layer->T, D = layer->q;
    const int64_t* ids = (const int64_t*)(const void*)batch->input;
    FNGD_TRY(check_ids(layer, ids, N, err));
    memset(out_w, 0, (size_t)layer->n_weight * sizeof(float));
    for (int i = 0; i < N; ++i) {
        const float s = scale * alpha[i];
        for (int t = 0; t < T; ++t) {
            const int64_t id = ids[(int64_t)i * T + t];
            if (id < 0) continue;
            const float* e = batch->grad_output + ((int64_t)i * T + t) * D;
            float* row = out_w + id * D;
            for (int c = 0; c < D; ++c) row[c] += s * e[c];
        }
    }
    return FNGD_SUCCESS;
}
