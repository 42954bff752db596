#!/usr/bin/env bash
# Lays out a CUDA 13 build root from PyPI wheels, for building `staria-train --features cuda` on
# a machine with no CUDA installed and no GPU (the GPU machines lent here have no Rust
# toolchain, so the binary is built here and carried there).
#
#   scripts/cuda-toolchain.sh DIR        # then: source DIR/env.sh
#   cargo build --release -p staria-trainer --features cuda   # binary in DIR/target/release
#
# candle 0.11 compiles its kernels with `nvcc` at build time and links cuBLAS/cuRAND; cudarc
# links the driver (`libcuda`), which only exists where a GPU driver is installed. So DIR gets
# nvcc and the runtime libraries from NVIDIA's wheels, laid out as a CUDA root (`bin`, `include`,
# `nvvm`, `lib64`), plus a link-only `libcuda.so` stub defining every `cu*` symbol cudarc
# declares: the real driver library is the one loaded at run time on the GPU machine. There, put
# cuBLAS/cuRAND 13 on `LD_LIBRARY_PATH` (PyTorch's wheels carry them). Compute capability 90
# (H100/H200); set CUDA_COMPUTE_CAP before sourcing env.sh for another GPU.
set -euo pipefail
dir=$(realpath -m "${1:?usage: scripts/cuda-toolchain.sh DIR}")
mkdir -p "$dir/wheels" "$dir/unpacked" "$dir/stub"

python3 -m pip download -q --no-deps -d "$dir/wheels" \
    "nvidia-cuda-nvcc==13.0.*" "nvidia-cuda-crt==13.0.*" "nvidia-nvvm==13.0.*" \
    "nvidia-cuda-runtime==13.0.*" "nvidia-cuda-cccl==13.0.*" "nvidia-cuda-nvrtc==13.0.*" \
    "nvidia-cublas==13.0.*" "nvidia-curand==10.4.*"
for wheel in "$dir"/wheels/*.whl; do unzip -qo "$wheel" -d "$dir/unpacked"; done

root=$dir/root
rm -rf "$root"
cp -r "$dir/unpacked/nvidia/cu13" "$root"
ln -s lib "$root/lib64"
# The linker looks for the unversioned names.
for lib in "$root"/lib/lib{cudart,nvrtc,cublas,cublasLt,curand}.so.*; do
    ln -sf "$(basename "$lib")" "${lib%%.so.*}.so"
done

# Every driver entry point cudarc's bindings name, as empty functions: enough to link.
cudarc=$(cargo metadata --format-version 1 --features staria-trainer/cuda \
    --manifest-path "$(dirname "$0")/../Cargo.toml" |
    python3 -c 'import json,sys; print(next(p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"] == "cudarc"))')
grep -ohE '\bfn cu[A-Za-z0-9_]+' "$(dirname "$cudarc")/src/driver/sys/mod.rs" | awk '{print $2}' |
    sort -u | awk '{print "void " $1 "(void) {}"}' > "$dir/stub/libcuda.c"
gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$dir/stub/libcuda.so" "$dir/stub/libcuda.c"

cat > "$dir/env.sh" <<EOF
export CUDA_HOME=$root CUDA_PATH=$root CUDA_ROOT=$root
export PATH=$root/bin:\$PATH CUDA_COMPUTE_CAP=\${CUDA_COMPUTE_CAP:-90}
export LIBRARY_PATH=$dir/stub:$root/lib:\${LIBRARY_PATH:-}
export CARGO_TARGET_DIR=$dir/target
EOF
"$root/bin/nvcc" --version | tail -n 1
echo "stub: $(grep -c . "$dir/stub/libcuda.c") driver symbols; now: source $dir/env.sh"
