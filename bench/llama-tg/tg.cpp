// Times token generation the way llama-bench's "tg" test does: a fresh context, one token per
// decode call, n_gen calls, repeated; prints JSON with the mean and each run's tokens/s.
// Usage: llama-tg MODEL.gguf N_GEN THREADS REPS
#include "llama.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

static void quiet(ggml_log_level, const char *, void *) {}

int main(int argc, char ** argv) {
    if (argc != 5) {
        std::fprintf(stderr, "usage: %s MODEL.gguf N_GEN THREADS REPS\n", argv[0]);
        return 2;
    }
    const int n_gen = std::atoi(argv[2]);
    const int threads = std::atoi(argv[3]);
    const int reps = std::atoi(argv[4]);
    llama_log_set(quiet, nullptr);
    llama_backend_init();
    llama_model * model = llama_model_load_from_file(argv[1], llama_model_default_params());
    if (!model) {
        std::fprintf(stderr, "cannot load %s\n", argv[1]);
        return 1;
    }
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = n_gen + 16;
    cp.n_batch = cp.n_ctx;
    cp.n_threads = threads;
    cp.n_threads_batch = threads;
    cp.no_perf = true;
    llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) {
        std::fprintf(stderr, "cannot create a context\n");
        return 1;
    }
    const llama_vocab * vocab = llama_model_get_vocab(model);
    const int n_vocab = llama_vocab_n_tokens(vocab);
    llama_token token = llama_vocab_bos(vocab);

    auto generate = [&](int n) {
        llama_memory_clear(llama_get_memory(ctx), true);
        for (int i = 0; i < n; i++) {
            llama_batch batch = llama_batch_get_one(&token, 1);
            if (llama_decode(ctx, batch) != 0) {
                std::fprintf(stderr, "decode failed\n");
                std::exit(1);
            }
            token = std::rand() % n_vocab;
        }
        llama_synchronize(ctx);
    };
    generate(1);  // warm-up, as llama-bench does
    std::vector<double> ts;
    double sum = 0;
    for (int r = 0; r < reps; r++) {
        const auto t0 = std::chrono::steady_clock::now();
        generate(n_gen);
        const auto t1 = std::chrono::steady_clock::now();
        const double s = std::chrono::duration<double>(t1 - t0).count();
        ts.push_back(n_gen / s);
        sum += n_gen / s;
    }
    std::printf("{\"n_gen\": %d, \"threads\": %d, \"avg_ts\": %.3f, \"samples_ts\": [", n_gen, threads, sum / reps);
    for (size_t i = 0; i < ts.size(); i++) {
        std::printf("%s%.3f", i ? ", " : "", ts[i]);
    }
    std::printf("]}\n");
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
