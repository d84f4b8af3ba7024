/// Training allocates and frees many large tensors per step. glibc's malloc returns such blocks
/// to the kernel and faults them in again on the next step (measured: about 40% of a step);
/// mimalloc keeps them, which makes training 1.5-1.7x faster on CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    shapewise::cli::run()
}
