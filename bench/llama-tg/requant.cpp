// Requantises a GGUF with llama.cpp's own quantiser (llama_model_quantize, requantising allowed),
// for the benchmark's check of how batched decoding scales in another weight format.
// Usage: llama-requant IN.gguf OUT.gguf FTYPE   (FTYPE: a llama_ftype number, e.g. 2 for Q4_0)
#include "common.h"

#include <cstdio>
#include <cstdlib>

int main(int argc, char ** argv) {
    if (argc != 4) {
        std::fprintf(stderr, "usage: %s IN.gguf OUT.gguf FTYPE\n", argv[0]);
        return 2;
    }
    silence_llama();
    llama_model_quantize_params params = llama_model_quantize_default_params();
    params.ftype = static_cast<llama_ftype>(std::atoi(argv[3]));
    params.allow_requantize = true;
    if (llama_model_quantize(argv[1], argv[2], &params) != 0) {
        std::fprintf(stderr, "cannot requantise %s\n", argv[1]);
        return 1;
    }
    return 0;
}
