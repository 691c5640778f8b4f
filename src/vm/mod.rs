//! Other kernels for the findings (`swaplab matrix --kernel`): a Debian
//! release's kernel from its archive, an initramfs with a static busybox,
//! and a qemu guest that mounts the host's files read-only and runs this
//! very swaplab on that kernel.

pub mod apt;
pub mod initramfs;
pub mod kernel_package;
pub mod modules;
pub mod qemu;
