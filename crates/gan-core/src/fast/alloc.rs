//! The memory allocator for programs that train with gan-core.
//!
//! A training step allocates and frees the same large buffers (weight gradients of tens
//! of megabytes, im2col matrices) every time. glibc's malloc hands such blocks back to
//! the kernel on free, so each step pays again for zeroed pages (about 900,000 page
//! faults in 20 InfoGAN steps); mimalloc, told never to return freed memory, reuses
//! them (about 500).
//!
//! ```no_run
//! #[global_allocator]
//! static ALLOC: gan_core::fast::alloc::Allocator = gan_core::fast::alloc::Allocator;
//!
//! fn main() {
//!     gan_core::fast::alloc::keep_freed_memory();
//!     gan_core::fast::alloc::one_thread_pool();
//!     // ... train
//! }
//! ```

/// mimalloc, to be declared `#[global_allocator]` by the binary.
pub use mimalloc::MiMalloc as Allocator;

/// mimalloc's `mi_option_purge_delay` (milliseconds before freed memory goes back to
/// the OS; -1: never). The Rust bindings do not name it; its place in mimalloc's
/// `mi_option_e` is fixed by the C header of the bundled version.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps freed memory in the process for reuse. Call first thing in `main`, before
/// other threads start (mimalloc's options are not thread safe).
pub fn keep_freed_memory() {
    // SAFETY: setting an option has no memory-safety preconditions; it is only not
    // synchronised, hence the advice to call it before spawning threads.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, -1) }
}

/// Runs candle's own element-wise thread pool single-threaded unless the user chose
/// otherwise with `CANDLE_NUM_THREADS`. The heavy work of a step (matrix products,
/// convolutions, batch norm, Adam) runs on rayon's pool; a second pool of spinning
/// threads on the same cores only slows it. Call first thing in `main`.
pub fn one_thread_pool() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}

/// mimalloc's current purge delay in milliseconds (-1: never), to check the setting.
pub fn purge_delay() -> i64 {
    // SAFETY: reading an option has no preconditions.
    unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) as i64 }
}

#[cfg(test)]
mod tests {
    #[test]
    fn purge_delay_is_the_option_we_think() {
        // The bundled mimalloc (v3) defaults to a purge delay of 1000 ms (options.c); a
        // wrong option index would read some other option's value.
        assert_eq!(super::purge_delay(), 1000);
        super::keep_freed_memory();
        assert_eq!(super::purge_delay(), -1);
    }
}
