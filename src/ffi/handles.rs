//! Every conversion between a Rust value and the opaque pointer C holds goes
//! through these helpers, so the ownership rules are written once.
//!
//! * Thread-shareable handles (`tcpchat_conn`, `tcpchat_server`) are
//!   `Arc`s: C holds one strong reference, and each call holds another for
//!   its duration, so a handle freed by one thread while another thread is
//!   still inside a call on it (say, returning from `accept` after a
//!   shutdown) stays alive until that call returns.
//! * Single-owner handles (`tcpchat_config`) are `Box`es.

use std::sync::Arc;

use crate::error::Result;

use super::boundary::arg_nonnull;

/// Give C a new reference-counted handle.
pub(crate) fn arc_into_c<T>(value: T) -> *mut T {
    Arc::into_raw(Arc::new(value)) as *mut T
}

/// Take a reference for the duration of one call.
///
/// # Safety
/// `p` must be NULL or a pointer returned by [`arc_into_c`] for this `T`
/// that C has not yet freed.
pub(crate) unsafe fn arc_from_c<T>(p: *const T, what: &str) -> Result<Arc<T>> {
    arg_nonnull(p, what)?;
    Arc::increment_strong_count(p);
    Ok(Arc::from_raw(p))
}

/// Drop C's reference (NULL is ignored).
///
/// # Safety
/// As [`arc_from_c`]; C must not use `p` afterwards.
pub(crate) unsafe fn arc_free<T>(p: *const T) {
    if !p.is_null() {
        drop(Arc::from_raw(p));
    }
}

/// Give C a new single-owner handle.
pub(crate) fn box_into_c<T>(value: T) -> *mut T {
    Box::into_raw(Box::new(value))
}

/// Borrow a single-owner handle.
///
/// # Safety
/// `p` must be NULL or a live pointer from [`box_into_c`] not used by
/// another thread during the borrow.
pub(crate) unsafe fn box_ref<'a, T>(p: *const T, what: &str) -> Result<&'a T> {
    arg_nonnull(p, what)?;
    Ok(&*p)
}

/// Borrow a single-owner handle mutably.
///
/// # Safety
/// As [`box_ref`].
pub(crate) unsafe fn box_mut<'a, T>(p: *mut T, what: &str) -> Result<&'a mut T> {
    arg_nonnull(p, what)?;
    Ok(&mut *p)
}

/// Free a single-owner handle (NULL is ignored).
///
/// # Safety
/// As [`box_ref`]; C must not use `p` afterwards.
pub(crate) unsafe fn box_free<T>(p: *mut T) {
    if !p.is_null() {
        drop(Box::from_raw(p));
    }
}
