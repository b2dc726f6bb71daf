//! A connection after its security handshake: plain TCP or TLS over TCP, whole or split.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

type Tls = tokio_rustls::TlsStream<TcpStream>;

/// A connection that passed [`TransportSecurity`](super::TransportSecurity): plain TCP (with or
/// without the cluster-secret handshake) or TLS. Writers must `flush` after writing: TLS keeps
/// what the socket did not take in its buffer until the next write or flush (a no-op on TCP).
pub struct SecureStream(Inner);

enum Inner {
    Plain(TcpStream),
    Tls(Box<Tls>),
}

impl SecureStream {
    pub(crate) fn plain(stream: TcpStream) -> Self {
        SecureStream(Inner::Plain(stream))
    }

    pub(crate) fn tls(stream: Tls) -> Self {
        SecureStream(Inner::Tls(Box::new(stream)))
    }

    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self.0, Inner::Tls(_))
    }

    /// Read and write halves for separate tasks. Plain TCP splits without a lock; TLS shares
    /// its session between the halves through a lock taken per poll.
    pub fn into_split(self) -> (SecureReadHalf, SecureWriteHalf) {
        match self.0 {
            Inner::Plain(stream) => {
                let (rd, wr) = stream.into_split();
                (
                    SecureReadHalf(ReadInner::Plain(rd)),
                    SecureWriteHalf(WriteInner::Plain(wr)),
                )
            }
            Inner::Tls(stream) => {
                let (rd, wr) = tokio::io::split(*stream);
                (
                    SecureReadHalf(ReadInner::Tls(rd)),
                    SecureWriteHalf(WriteInner::Tls(wr)),
                )
            }
        }
    }
}

impl std::fmt::Debug for SecureStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_tls() {
            "SecureStream(tls)"
        } else {
            "SecureStream(tcp)"
        })
    }
}

/// The reading half of a [`SecureStream`].
pub struct SecureReadHalf(ReadInner);

enum ReadInner {
    Plain(OwnedReadHalf),
    Tls(tokio::io::ReadHalf<Tls>),
}

/// The writing half of a [`SecureStream`].
pub struct SecureWriteHalf(WriteInner);

enum WriteInner {
    Plain(OwnedWriteHalf),
    Tls(tokio::io::WriteHalf<Tls>),
}

macro_rules! delegate_read {
    ($ty:ty, $($variant:path),+) => {
        impl AsyncRead for $ty {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                match &mut self.get_mut().0 {
                    $($variant(s) => Pin::new(s).poll_read(cx, buf),)+
                }
            }
        }
    };
}

macro_rules! delegate_write {
    ($ty:ty, $($variant:path),+) => {
        impl AsyncWrite for $ty {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                match &mut self.get_mut().0 {
                    $($variant(s) => Pin::new(s).poll_write(cx, buf),)+
                }
            }

            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                match &mut self.get_mut().0 {
                    $($variant(s) => Pin::new(s).poll_write_vectored(cx, bufs),)+
                }
            }

            fn is_write_vectored(&self) -> bool {
                match &self.0 {
                    $($variant(s) => s.is_write_vectored(),)+
                }
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match &mut self.get_mut().0 {
                    $($variant(s) => Pin::new(s).poll_flush(cx),)+
                }
            }

            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match &mut self.get_mut().0 {
                    $($variant(s) => Pin::new(s).poll_shutdown(cx),)+
                }
            }
        }
    };
}

delegate_read!(SecureStream, Inner::Plain, Inner::Tls);
delegate_write!(SecureStream, Inner::Plain, Inner::Tls);
delegate_read!(SecureReadHalf, ReadInner::Plain, ReadInner::Tls);
delegate_write!(SecureWriteHalf, WriteInner::Plain, WriteInner::Tls);
