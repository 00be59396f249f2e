// Times token generation the way llama-bench's "tg" test does: a fresh context, one token per
// decode call, n_gen calls, repeated; prints JSON with the mean and each run's tokens/s.
// With N_SEQ > 1 it times batched generation the way llama-batched-bench does: N_SEQ sequences
// in one context (one KV stream each, as maas runs them), every decode call carrying one token
// of each; tokens/s is then the aggregate over all sequences.
// With DEPTH > 0 each sequence first holds DEPTH prompt tokens (decoded before the clock starts,
// as llama-bench's -d does), so generation attends over a prompt as a chat answer does.
// N_CTX sets each sequence's context (default: just what the run needs, as llama-bench sizes it),
// so the reference can run in a context of the server's size.
// Usage: llama-tg MODEL.gguf N_GEN THREADS REPS [N_SEQ [DEPTH [N_CTX]]]
#include "common.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

int main(int argc, char ** argv) {
    if (argc < 5 || argc > 8) {
        std::fprintf(stderr, "usage: %s MODEL.gguf N_GEN THREADS REPS [N_SEQ [DEPTH [N_CTX]]]\n", argv[0]);
        return 2;
    }
    const int n_gen = std::atoi(argv[2]);
    const int threads = std::atoi(argv[3]);
    const int reps = std::atoi(argv[4]);
    const int n_seq = argc >= 6 ? std::atoi(argv[5]) : 1;
    const int depth = argc >= 7 ? std::atoi(argv[6]) : 0;
    const int n_ctx = argc == 8 ? std::atoi(argv[7]) : depth + n_gen + 16;
    if (n_gen < 1 || threads < 1 || reps < 1 || n_seq < 1 || n_seq > 64 || depth < 0 || depth > 4096 ||
        n_ctx < depth + n_gen + 1 || n_ctx > 65536) {
        std::fprintf(stderr, "N_GEN, THREADS and REPS must be positive, N_SEQ 1..64, DEPTH 0..4096, "
                             "N_CTX > DEPTH + N_GEN and at most 65536\n");
        return 2;
    }
    llama_model * model = load_model(argv[1]);
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = n_seq * n_ctx;
    cp.n_batch = cp.n_ctx;
    cp.n_seq_max = n_seq;
    cp.kv_unified = false;  // one KV stream per sequence, as maas runs them (the default)
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
    llama_batch many = llama_batch_init(n_seq, 0, 1);
    llama_batch prompt = llama_batch_init(n_seq * depth + 1, 0, 1);

    // Empties the cache, then decodes `depth` prompt tokens into every sequence.
    auto fill = [&]() {
        llama_memory_clear(llama_get_memory(ctx), true);
        if (depth == 0) {
            return;
        }
        prompt.n_tokens = 0;
        for (int s = 0; s < n_seq; s++) {
            for (int p = 0; p < depth; p++) {
                const int k = prompt.n_tokens++;
                prompt.token[k] = std::rand() % n_vocab;
                prompt.pos[k] = p;
                prompt.n_seq_id[k] = 1;
                prompt.seq_id[k][0] = s;
                prompt.logits[k] = p == depth - 1;
            }
        }
        if (llama_decode(ctx, prompt) != 0) {
            std::fprintf(stderr, "prompt decode failed\n");
            std::exit(1);
        }
        llama_synchronize(ctx);
    };

    auto generate = [&](int n) {
        for (int i = 0; i < n; i++) {
            llama_batch batch = llama_batch_get_one(&token, 1);
            if (n_seq > 1 || depth > 0) {
                // One token of every sequence, each at position depth + i of its own stream.
                many.n_tokens = n_seq;
                for (int s = 0; s < n_seq; s++) {
                    many.token[s] = i == 0 ? token : std::rand() % n_vocab;
                    many.pos[s] = depth + i;
                    many.n_seq_id[s] = 1;
                    many.seq_id[s][0] = s;
                    many.logits[s] = 1;
                }
                batch = many;
            }
            if (llama_decode(ctx, batch) != 0) {
                std::fprintf(stderr, "decode failed\n");
                std::exit(1);
            }
            token = std::rand() % n_vocab;
        }
        llama_synchronize(ctx);
    };
    fill();
    generate(1);  // warm-up, as llama-bench does
    std::vector<double> ts;
    double sum = 0;
    for (int r = 0; r < reps; r++) {
        fill();
        const auto t0 = std::chrono::steady_clock::now();
        generate(n_gen);
        const auto t1 = std::chrono::steady_clock::now();
        const double s = std::chrono::duration<double>(t1 - t0).count();
        ts.push_back(n_seq * n_gen / s);
        sum += n_seq * n_gen / s;
    }
    std::printf("{\"n_gen\": %d, \"n_seq\": %d, \"depth\": %d, \"n_ctx\": %d, \"threads\": %d, \"avg_ts\": %.3f, \"samples_ts\": [",
                n_gen, n_seq, depth, n_ctx, threads, sum / reps);
    for (size_t i = 0; i < ts.size(); i++) {
        std::printf("%s%.3f", i ? ", " : "", ts[i]);
    }
    std::printf("]}\n");
    llama_batch_free(prompt);
    llama_batch_free(many);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
