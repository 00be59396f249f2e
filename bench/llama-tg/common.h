// What the benchmark's llama.cpp tools share: llama.cpp's log silenced (their output is JSON) and
// the model loaded, or the process ended with a one-line error.
#pragma once

#include "llama.h"

#include <cstdio>
#include <cstdlib>

inline void silence_llama() {
    llama_log_set([](ggml_log_level, const char *, void *) {}, nullptr);
}

inline llama_model * load_model(const char * path) {
    silence_llama();
    llama_backend_init();
    llama_model * model = llama_model_load_from_file(path, llama_model_default_params());
    if (!model) {
        std::fprintf(stderr, "cannot load %s\n", path);
        std::exit(1);
    }
    return model;
}
