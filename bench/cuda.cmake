# CUDA kernel benchmarks (included by bench/CMakeLists.txt when FNGD_WITH_CUDA). Uses the
# backend's internal operation table, hence the static library and the src/ include paths.
# Output: fngd_bench_cuda_kernels [--out PATH | PATH] [--quick] (default results/cuda_kernels.json).
add_executable(fngd_bench_cuda_kernels bench_cuda_kernels.cu)
target_include_directories(fngd_bench_cuda_kernels PRIVATE
  ${PROJECT_SOURCE_DIR}/src ${PROJECT_SOURCE_DIR}/src/host)
target_link_libraries(fngd_bench_cuda_kernels PRIVATE
  fngd_static CUDA::cudart CUDA::cublas CUDA::cusolver)
target_compile_definitions(fngd_bench_cuda_kernels PRIVATE
  FNGD_BENCH_RESULTS_DIR="${CMAKE_CURRENT_SOURCE_DIR}/results")
if(FNGD_CUDA_LINEINFO)
  target_compile_options(fngd_bench_cuda_kernels PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-lineinfo>)
endif()
