// cuda_toolkit's proof that nvcc works: compiled to a cubin for the configured architecture, never run.
__global__ void scale(float *x, float a, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        x[i] *= a;
    }
}
