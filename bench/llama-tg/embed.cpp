// llama.cpp's own embedding loop, the reference for maas's /v1/embeddings: no server, no HTTP,
// the same GGUF and the same work as maas does for a request. Texts (one per line) are taken in
// groups of BATCH, as a client sends them; each group is tokenized, split into passes of about
// PASS tokens in a number that keeps every encoder busy (the plan of maas-engine-llama's
// plan_passes), and the passes run on THREADS encoders side by side, each a single-threaded
// context of its own; the pooled vectors are read back and L2-normalised before the next group.
// Prints JSON with each run's sentences/s.
// Usage: llama-embed MODEL.gguf TEXTS.txt THREADS REPS [BATCH [PASS]]
#include "common.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

using Tokens = std::vector<llama_token>;
using Range = std::pair<size_t, size_t>;

// Sequences per encoder pass, as maas-engine-llama's BATCH_SEQS.
static const size_t MAX_SEQS = 64;

// Splits inputs, in order, into passes of about `target` tokens, in a multiple of `encoders`
// passes; an input goes to the pass its middle token falls in, and a pass never exceeds
// `max_tokens` tokens or MAX_SEQS sequences.
static std::vector<Range> plan(const std::vector<Tokens> & inputs, size_t target, size_t encoders,
                               size_t max_tokens) {
    size_t total = 0;
    for (const auto & t : inputs) {
        total += t.size();
    }
    const size_t per_round = target * encoders;
    const size_t passes = std::max<size_t>((total + per_round / 2) / per_round, 1) * encoders;
    const double share = double(total) / double(passes);
    std::vector<Range> out;
    size_t start = 0, tokens = 0, before = 0, current = 0;
    for (size_t i = 0; i < inputs.size(); i++) {
        const double middle = double(before + inputs[i].size() / 2);
        const size_t wanted = std::min(size_t(middle / share), passes - 1);
        const bool full = tokens + inputs[i].size() > max_tokens || i - start >= MAX_SEQS;
        if (i > start && (wanted > current || full)) {
            out.emplace_back(start, i);
            start = i;
            tokens = 0;
        }
        current = std::max(current, wanted);
        tokens += inputs[i].size();
        before += inputs[i].size();
    }
    if (start < inputs.size()) {
        out.emplace_back(start, inputs.size());
    }
    return out;
}

int main(int argc, char ** argv) {
    if (argc < 5 || argc > 7) {
        std::fprintf(stderr, "usage: %s MODEL.gguf TEXTS.txt THREADS REPS [BATCH [PASS]]\n", argv[0]);
        return 2;
    }
    const int threads = std::atoi(argv[3]);
    const int reps = std::atoi(argv[4]);
    const size_t batch = argc >= 6 ? std::strtoul(argv[5], nullptr, 10) : 32;
    const size_t target = argc == 7 ? std::strtoul(argv[6], nullptr, 10) : 128;
    if (threads < 1 || reps < 1 || batch < 1 || target < 1) {
        std::fprintf(stderr, "THREADS, REPS, BATCH and PASS must be positive\n");
        return 2;
    }
    std::vector<std::string> texts;
    {
        std::ifstream in(argv[2]);
        for (std::string line; std::getline(in, line);) {
            texts.push_back(line);
        }
    }
    if (texts.empty()) {
        std::fprintf(stderr, "no texts in %s\n", argv[2]);
        return 1;
    }
    llama_model * model = load_model(argv[1]);
    const llama_vocab * vocab = llama_model_get_vocab(model);
    // Inputs are cut at the sentence-transformers length maas's converter records, if any.
    size_t max_seq = size_t(llama_model_n_ctx_train(model));
    char value[32];
    if (llama_model_meta_val_str(model, "maas.embedding.max_seq_length", value, sizeof value) > 0) {
        max_seq = std::min(max_seq, size_t(std::atoi(value)));
    }
    // One context of the longest input, as maas opens its encoders; passes fit in it.
    const size_t n_ctx = std::max<size_t>(max_seq, 128);
    if (target > n_ctx) {
        std::fprintf(stderr, "PASS must be at most %zu tokens (the encoder's context)\n", n_ctx);
        return 2;
    }
    const int n_embd = llama_model_n_embd(model);

    // An encoder: a context and a batch of its size, made once, as maas keeps its encoders.
    struct Encoder {
        llama_context * ctx;
        llama_batch batch;
    };
    std::vector<Encoder> encoders;
    for (int w = 0; w < threads; w++) {
        llama_context_params cp = llama_context_default_params();
        cp.embeddings = true;
        cp.n_ctx = n_ctx;
        cp.n_batch = n_ctx;
        cp.n_ubatch = n_ctx;
        cp.n_seq_max = MAX_SEQS;
        cp.kv_unified = true;
        cp.n_threads = 1;
        cp.n_threads_batch = 1;
        cp.no_perf = true;
        llama_context * ctx = llama_init_from_model(model, cp);
        if (!ctx) {
            std::fprintf(stderr, "cannot create a context\n");
            return 1;
        }
        encoders.push_back({ctx, llama_batch_init(int(n_ctx), 0, 1)});
    }

    // Embeds one group: tokenize, plan, run the passes on the encoders, read and normalise.
    auto embed = [&](size_t from, size_t to) {
        std::vector<Tokens> inputs;
        for (size_t i = from; i < to; i++) {
            const std::string & text = texts[i];
            Tokens t(text.size() + 8);
            int n = llama_tokenize(vocab, text.data(), int(text.size()), t.data(), int(t.size()), true, false);
            if (n < 0) {
                t.resize(size_t(-n));
                n = llama_tokenize(vocab, text.data(), int(text.size()), t.data(), int(t.size()), true, false);
            }
            t.resize(size_t(std::max(n, 0)));
            // Cut as maas cuts a long input: shortened, its closing separator kept.
            if (t.size() > max_seq) {
                const llama_token last = t.back();
                t.resize(max_seq - 1);
                t.push_back(last);
            }
            inputs.push_back(std::move(t));
        }
        const std::vector<Range> passes = plan(inputs, target, size_t(threads), n_ctx);
        std::vector<std::vector<float>> vectors(inputs.size());
        std::atomic<size_t> next{0};
        auto encoder = [&](int w) {
            llama_context * ctx = encoders[w].ctx;
            llama_batch & b = encoders[w].batch;
            for (size_t p; (p = next.fetch_add(1)) < passes.size();) {
                const auto [first, last] = passes[p];
                b.n_tokens = 0;
                for (size_t i = first; i < last; i++) {
                    for (size_t j = 0; j < inputs[i].size(); j++) {
                        const int k = b.n_tokens++;
                        b.token[k] = inputs[i][j];
                        b.pos[k] = int(j);
                        b.n_seq_id[k] = 1;
                        b.seq_id[k][0] = int(i - first);
                        b.logits[k] = 1;
                    }
                }
                if (llama_encode(ctx, b) != 0) {
                    std::fprintf(stderr, "encode failed\n");
                    std::exit(1);
                }
                for (size_t i = first; i < last; i++) {
                    const float * e = llama_get_embeddings_seq(ctx, int(i - first));
                    double norm = 0;
                    for (int d = 0; d < n_embd; d++) {
                        norm += double(e[d]) * e[d];
                    }
                    const float scale = norm > 0 ? float(1.0 / std::sqrt(norm)) : 0.0f;
                    vectors[i].resize(size_t(n_embd));
                    for (int d = 0; d < n_embd; d++) {
                        vectors[i][d] = e[d] * scale;
                    }
                }
            }
        };
        std::vector<std::thread> workers;
        for (int w = 1; w < threads; w++) {
            workers.emplace_back(encoder, w);
        }
        encoder(0);
        for (auto & t : workers) {
            t.join();
        }
    };

    auto run = [&]() {
        for (size_t i = 0; i < texts.size(); i += batch) {
            embed(i, std::min(i + batch, texts.size()));
        }
    };
    run();  // warm-up
    std::vector<double> rates;
    for (int r = 0; r < reps; r++) {
        const auto t0 = std::chrono::steady_clock::now();
        run();
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        rates.push_back(double(texts.size()) / s);
    }
    std::printf("{\"texts\": %zu, \"batch\": %zu, \"pass\": %zu, \"threads\": %d, \"samples_per_s\": [",
                texts.size(), batch, target, threads);
    for (size_t i = 0; i < rates.size(); i++) {
        std::printf("%s%.3f", i ? ", " : "", rates[i]);
    }
    std::printf("]}\n");
    for (auto & e : encoders) {
        llama_batch_free(e.batch);
        llama_free(e.ctx);
    }
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
