//! The panic boundary and argument checks every export goes through, and the
//! calling thread's last error message.
//!
//! Every `extern "C"` function's body is a closure passed to [`guard`] (or
//! [`guard_value`]): a panic is caught there and becomes
//! `TCPCHAT_STATUS_INTERNAL`, never an unwind into C. Pointers from C are
//! checked by the `arg_*` helpers, which return `InvalidArgument` errors
//! naming the argument instead of dereferencing NULL.

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::error::{Error, Result, Status};

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Record `e` as this thread's last error and return its status.
pub(crate) fn set_last_error(e: &Error) -> Status {
    let text = e.to_string().replace('\0', "\\0");
    let c = CString::new(text).unwrap_or_default();
    LAST_ERROR.with(|slot| *slot.borrow_mut() = c);
    e.status()
}

/// A pointer to this thread's last error message; valid until the next
/// failing call on this thread.
pub(crate) fn last_error_ptr() -> *const c_char {
    LAST_ERROR.with(|slot| slot.borrow().as_ptr())
}

fn panic_error(payload: Box<dyn std::any::Any + Send>) -> Error {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    Error::Internal(format!("panic inside tcpchat: {what}"))
}

/// Run an export's body: `Ok` gives `TCPCHAT_STATUS_OK`; an error or a panic
/// gives its status and sets the last error message.
pub(crate) fn guard(f: impl FnOnce() -> Result<()>) -> Status {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => Status::Ok,
        Ok(Err(e)) => set_last_error(&e),
        Err(p) => set_last_error(&panic_error(p)),
    }
}

/// Run an export's body that returns a plain value, with `fallback` on a panic.
pub(crate) fn guard_value<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(p) => {
            set_last_error(&panic_error(p));
            fallback
        }
    }
}

/// `Err(InvalidArgument)` naming `what` when `p` is NULL.
pub(crate) fn arg_nonnull<T>(p: *const T, what: &str) -> Result<()> {
    if p.is_null() {
        return Err(Error::invalid(format!("{what} must not be NULL")));
    }
    Ok(())
}

/// Borrow `len` bytes at `p`. NULL is accepted only with `len == 0`.
///
/// # Safety
/// If non-NULL, `p` must point to `len` readable bytes for the borrow's life.
pub(crate) unsafe fn arg_bytes<'a>(p: *const u8, len: usize, what: &str) -> Result<&'a [u8]> {
    if p.is_null() {
        if len == 0 {
            return Ok(&[]);
        }
        return Err(Error::invalid(format!("{what} is NULL but its length is {len}")));
    }
    if len > isize::MAX as usize {
        return Err(Error::invalid(format!("{what} length {len} is too large")));
    }
    Ok(std::slice::from_raw_parts(p, len))
}

/// Borrow `len` writable bytes at `p`. NULL is accepted only with `len == 0`.
///
/// # Safety
/// If non-NULL, `p` must point to `len` writable bytes for the borrow's life.
pub(crate) unsafe fn arg_bytes_mut<'a>(p: *mut u8, len: usize, what: &str) -> Result<&'a mut [u8]> {
    if p.is_null() {
        if len == 0 {
            return Ok(&mut []);
        }
        return Err(Error::invalid(format!("{what} is NULL but its length is {len}")));
    }
    if len > isize::MAX as usize {
        return Err(Error::invalid(format!("{what} length {len} is too large")));
    }
    Ok(std::slice::from_raw_parts_mut(p, len))
}

/// Borrow a NUL-terminated UTF-8 string.
///
/// # Safety
/// If non-NULL, `p` must point to a NUL-terminated string.
pub(crate) unsafe fn arg_str<'a>(p: *const c_char, what: &str) -> Result<&'a str> {
    arg_nonnull(p, what)?;
    CStr::from_ptr(p)
        .to_str()
        .map_err(|_| Error::invalid(format!("{what} is not valid UTF-8")))
}

/// A C `int` port as a TCP port, refusing values outside 0..=65535.
/// A port from C: `lowest` (1 to connect, 0 to bind: any free port) to 65535.
pub(crate) fn arg_port(port: i32, lowest: u16) -> Result<u16> {
    match u16::try_from(port) {
        Ok(p) if p >= lowest => Ok(p),
        _ => Err(Error::invalid(format!("port {port} is out of range ({lowest} to 65535)"))),
    }
}

/// Write `value` through `out` when `out` is not NULL.
///
/// # Safety
/// If non-NULL, `out` must be valid for a write of `T`.
pub(crate) unsafe fn write_out<T>(out: *mut T, value: T) {
    if !out.is_null() {
        out.write(value);
    }
}

/// Copy `s` as a NUL-terminated string into `buf` of `len` bytes and report
/// its length (without the NUL) through `out_len`. When it does not fit,
/// nothing is written to `buf`, `out_len` gets the size needed (with the
/// NUL), and the result is `BufferTooSmall`.
///
/// # Safety
/// `buf` must be valid for `len` bytes when non-NULL; `out_len` for a write when non-NULL.
pub(crate) unsafe fn write_string(s: &str, buf: *mut c_char, len: usize, out_len: *mut usize) -> Result<()> {
    let dst = arg_bytes_mut(buf as *mut u8, len, "buffer")?;
    if s.len() + 1 > dst.len() {
        write_out(out_len, s.len() + 1);
        return Err(Error::BufferTooSmall {
            needed: s.len() + 1,
            capacity: dst.len(),
        });
    }
    dst[..s.len()].copy_from_slice(s.as_bytes());
    dst[s.len()] = 0;
    write_out(out_len, s.len());
    Ok(())
}
