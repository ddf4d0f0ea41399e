//! What every zero-copy view shares, written once: the struct over a buffer `T: AsRef<[u8]>`,
//! `new_unchecked`, `new_checked` (`new_unchecked`, then `check_len`), `into_inner` and, for a
//! view whose only check is a minimum length, `check_len` itself. The field accessors stay with
//! each view: every one reads its own field through [`crate::bytes`].

/// Declares a zero-copy view and its constructors.
///
/// ```text
/// view! {
///     /// Doc of the view.
///     pub struct UdpPacket;
///     // Optional, for the views that never had it: no `into_inner`.
///     no into_inner;
///     // Optional: `check_len` fails with `DropReason::$reason` when the buffer is shorter than
///     // the given length. Without this clause the view writes its own `check_len`.
///     /// Doc of check_len.
///     check_len: HEADER_LEN => UdpTruncated;
///     // or, with the length computed from the (unchecked) view:
///     // check_len: |v| v.header_len() => Ipv6ExtensionTruncated;
/// }
/// ```
///
/// Nothing generated indexes, allocates or panics: `check_len` only compares lengths.
macro_rules! view {
    (
        $(#[$attr:meta])*
        pub struct $name:ident;
        $(no $into_inner:ident;)?
        $($(#[$check_attr:meta])* check_len: $($check:tt)+)?
    ) => {
        $(#[$attr])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub struct $name<T: AsRef<[u8]>> {
            buffer: T,
        }

        impl<T: AsRef<[u8]>> $name<T> {
            /// Wrap without checking (accessors on a short buffer read zeros).
            pub const fn new_unchecked(buffer: T) -> Self {
                Self { buffer }
            }

            /// Wrap after [`check_len`](Self::check_len).
            pub fn new_checked(buffer: T) -> Result<Self, $crate::DropReason> {
                let view = Self::new_unchecked(buffer);
                view.check_len()?;
                Ok(view)
            }

            $crate::view::view!(@into_inner $($into_inner)?);
            $crate::view::view!(@check_len $($(#[$check_attr])* check_len: $($check)+)?);
        }
    };

    (@into_inner) => {
        /// The wrapped buffer.
        pub fn into_inner(self) -> T {
            self.buffer
        }
    };
    (@into_inner into_inner) => {};

    (@check_len) => {};
    (@check_len $(#[$doc:meta])* check_len: |$view:ident| $min:expr => $reason:ident;) => {
        $(#[$doc])*
        pub fn check_len(&self) -> Result<(), $crate::DropReason> {
            let $view = self;
            if self.buffer.as_ref().len() < $min {
                return Err($crate::DropReason::$reason);
            }
            Ok(())
        }
    };
    (@check_len $(#[$doc:meta])* check_len: $min:expr => $reason:ident;) => {
        $crate::view::view!(@check_len $(#[$doc])* check_len: |_view| $min => $reason;);
    };
}

pub(crate) use view;
