//! The cluster-secret handshake: a challenge-response over fresh nonces from both sides, with
//! HMAC-SHA256, run on every RPC, blob and data connection before the protocol's first byte.
//!
//! ```text
//! dialer → acceptor  HELLO      "RFLSEC" | version 1 | channel | dialer nonce (32)
//! acceptor → dialer  CHALLENGE  "RFLSEC" | version 1 | acceptor nonce (32) | acceptor proof (32)
//! dialer → acceptor  PROOF      dialer proof (32)
//! acceptor → dialer  VERDICT    0 accepted | 1 refused
//!
//! proof(role) = HMAC-SHA256(secret, "rflink-cluster-secret/v1 " role | channel | dialer nonce
//!                                   | acceptor nonce | binding)
//! ```
//!
//! * Both sides prove knowledge: the dialer checks the acceptor's proof before it sends its own,
//!   so a node never talks to an impostor listening on a cluster address.
//! * **No replay.** Each proof covers both nonces, 32 fresh random bytes from each side: a
//!   captured proof is worthless on the next connection, where the other side's nonce differs.
//!   The role in the proof keeps an acceptor's proof from being reflected as a dialer's.
//! * The **channel** (RPC, blob, data) is in the proof, so a handshake for one transport cannot
//!   be relayed to another.
//! * With TLS, the **binding** is keying material exported from the TLS session (RFC 5705): the
//!   proofs then belong to this TLS connection, and cannot be relayed through a second one.
//! * Nothing of the protocol behind is read before the verdict: a peer without the secret is
//!   refused with no state change anywhere, and bytes are compared in constant time.

use ring::hmac;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{random_bytes, Channel, ClusterSecret, SecurityFailure};

/// The first bytes of HELLO and CHALLENGE.
pub const MAGIC: &[u8; 6] = b"RFLSEC";
/// The handshake's version.
pub const VERSION: u8 = 1;
/// Length of each nonce.
pub const NONCE_LEN: usize = 32;
/// Length of each proof (HMAC-SHA256).
pub const PROOF_LEN: usize = 32;
/// Length of HELLO.
pub const HELLO_LEN: usize = MAGIC.len() + 2 + NONCE_LEN;
/// Length of CHALLENGE.
pub const CHALLENGE_LEN: usize = MAGIC.len() + 1 + NONCE_LEN + PROOF_LEN;

const ACCEPTED: u8 = 0;
const REFUSED: u8 = 1;

/// Which side a proof is from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Dialer,
    Acceptor,
}

/// The bytes a proof signs.
fn proof_message(
    role: Role,
    channel: Channel,
    dialer_nonce: &[u8; NONCE_LEN],
    acceptor_nonce: &[u8; NONCE_LEN],
    binding: &[u8],
) -> Vec<u8> {
    let label: &[u8] = match role {
        Role::Dialer => b"rflink-cluster-secret/v1 dialer",
        Role::Acceptor => b"rflink-cluster-secret/v1 acceptor",
    };
    let mut msg = Vec::with_capacity(label.len() + 1 + 2 * NONCE_LEN + binding.len());
    msg.extend_from_slice(label);
    msg.push(channel.code());
    msg.extend_from_slice(dialer_nonce);
    msg.extend_from_slice(acceptor_nonce);
    msg.extend_from_slice(binding);
    msg
}

fn key(secret: &ClusterSecret) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, secret.bytes())
}

/// HELLO's fields, or why the bytes are not a HELLO. Pure, for the property tests.
pub fn parse_hello(bytes: &[u8; HELLO_LEN]) -> Result<(Channel, [u8; NONCE_LEN]), SecurityFailure> {
    if &bytes[..MAGIC.len()] != MAGIC {
        return Err(SecurityFailure::NoSecretHandshake);
    }
    let version = bytes[MAGIC.len()];
    if version != VERSION {
        return Err(SecurityFailure::Malformed(format!(
            "cluster-secret handshake version {version}, this node speaks {VERSION}"
        )));
    }
    let code = bytes[MAGIC.len() + 1];
    let channel = Channel::from_code(code).ok_or_else(|| {
        SecurityFailure::Malformed(format!("unknown channel {code} in the handshake"))
    })?;
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&bytes[MAGIC.len() + 2..]);
    Ok((channel, nonce))
}

/// CHALLENGE's nonce and proof, or why the bytes are not a CHALLENGE. Pure.
pub fn parse_challenge(
    bytes: &[u8; CHALLENGE_LEN],
) -> Result<([u8; NONCE_LEN], [u8; PROOF_LEN]), SecurityFailure> {
    if &bytes[..MAGIC.len()] != MAGIC {
        return Err(SecurityFailure::Malformed(
            "the peer answered the cluster-secret handshake with something else".into(),
        ));
    }
    let version = bytes[MAGIC.len()];
    if version != VERSION {
        return Err(SecurityFailure::Malformed(format!(
            "cluster-secret handshake version {version}, this node speaks {VERSION}"
        )));
    }
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&bytes[MAGIC.len() + 1..MAGIC.len() + 1 + NONCE_LEN]);
    let mut proof = [0u8; PROOF_LEN];
    proof.copy_from_slice(&bytes[MAGIC.len() + 1 + NONCE_LEN..]);
    Ok((nonce, proof))
}

/// An I/O error as a failure; over TLS it may carry a TLS alert (a refused certificate).
fn io_failure(err: std::io::Error) -> SecurityFailure {
    super::tls::classify_io(&err)
}

/// The dialer's side. `binding` is the TLS exporter value (empty without TLS).
pub async fn dial<S>(
    stream: &mut S,
    secret: &ClusterSecret,
    channel: Channel,
    binding: &[u8],
) -> Result<(), SecurityFailure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let dialer_nonce: [u8; NONCE_LEN] =
        random_bytes().map_err(|e| SecurityFailure::Io(e.to_string()))?;
    let mut hello = Vec::with_capacity(HELLO_LEN);
    hello.extend_from_slice(MAGIC);
    hello.push(VERSION);
    hello.push(channel.code());
    hello.extend_from_slice(&dialer_nonce);
    stream.write_all(&hello).await.map_err(io_failure)?;
    stream.flush().await.map_err(io_failure)?;

    let mut challenge = [0u8; CHALLENGE_LEN];
    let mut got = 0;
    while got < CHALLENGE_LEN {
        let closed = match stream.read(&mut challenge[got..]).await {
            Ok(0) => true,
            Ok(n) => {
                got += n;
                false
            }
            Err(err) => match io_failure(err) {
                SecurityFailure::PeerClosed => true,
                other => return Err(other),
            },
        };
        if closed {
            // A TLS node answers our HELLO with an alert and hangs up; a node without a secret
            // reads it as its own protocol's preamble and hangs up.
            return Err(if super::looks_like_tls_record(&challenge[..got]) {
                SecurityFailure::NotTls
            } else {
                SecurityFailure::PeerHasNoSecret
            });
        }
    }
    let (acceptor_nonce, acceptor_proof) = parse_challenge(&challenge)?;
    let expected = proof_message(
        Role::Acceptor,
        channel,
        &dialer_nonce,
        &acceptor_nonce,
        binding,
    );
    // Constant time in the presented bytes.
    if hmac::verify(&key(secret), &expected, &acceptor_proof).is_err() {
        return Err(SecurityFailure::WrongSecret);
    }
    let mine = hmac::sign(
        &key(secret),
        &proof_message(
            Role::Dialer,
            channel,
            &dialer_nonce,
            &acceptor_nonce,
            binding,
        ),
    );
    stream.write_all(mine.as_ref()).await.map_err(io_failure)?;
    stream.flush().await.map_err(io_failure)?;
    let mut verdict = [0u8; 1];
    stream.read_exact(&mut verdict).await.map_err(io_failure)?;
    match verdict[0] {
        ACCEPTED => Ok(()),
        REFUSED => Err(SecurityFailure::RefusedByPeer),
        other => Err(SecurityFailure::Malformed(format!(
            "verdict byte {other} in the cluster-secret handshake"
        ))),
    }
}

/// The acceptor's side, for a connection that arrived on a `channel` listener.
pub async fn accept<S>(
    stream: &mut S,
    secret: &ClusterSecret,
    channel: Channel,
    binding: &[u8],
) -> Result<(), SecurityFailure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut hello = [0u8; HELLO_LEN];
    // Read the magic first: a peer without a secret sends its protocol's preamble, which may be
    // shorter than HELLO; it should get a clear refusal, not a read that waits for more.
    stream
        .read_exact(&mut hello[..MAGIC.len()])
        .await
        .map_err(io_failure)?;
    if &hello[..MAGIC.len()] != MAGIC {
        // A TLS node's ClientHello: it has TLS on, this node has not.
        if super::looks_like_tls_record(&hello[..MAGIC.len()]) {
            return Err(SecurityFailure::NotTls);
        }
        return Err(SecurityFailure::NoSecretHandshake);
    }
    stream
        .read_exact(&mut hello[MAGIC.len()..])
        .await
        .map_err(io_failure)?;
    let (requested, dialer_nonce) = parse_hello(&hello)?;
    if requested != channel {
        return Err(SecurityFailure::WrongChannel {
            expected: channel,
            requested,
        });
    }
    let acceptor_nonce: [u8; NONCE_LEN] =
        random_bytes().map_err(|e| SecurityFailure::Io(e.to_string()))?;
    let mine = hmac::sign(
        &key(secret),
        &proof_message(
            Role::Acceptor,
            channel,
            &dialer_nonce,
            &acceptor_nonce,
            binding,
        ),
    );
    let mut challenge = Vec::with_capacity(CHALLENGE_LEN);
    challenge.extend_from_slice(MAGIC);
    challenge.push(VERSION);
    challenge.extend_from_slice(&acceptor_nonce);
    challenge.extend_from_slice(mine.as_ref());
    stream.write_all(&challenge).await.map_err(io_failure)?;
    stream.flush().await.map_err(io_failure)?;

    let mut presented = [0u8; PROOF_LEN];
    stream
        .read_exact(&mut presented)
        .await
        .map_err(|err| match io_failure(err) {
            // The dialer checked our proof first and hung up: it holds another secret.
            SecurityFailure::PeerClosed => SecurityFailure::RefusedByPeer,
            other => other,
        })?;
    let expected = proof_message(
        Role::Dialer,
        channel,
        &dialer_nonce,
        &acceptor_nonce,
        binding,
    );
    if hmac::verify(&key(secret), &expected, &presented).is_err() {
        let _ = stream.write_all(&[REFUSED]).await;
        let _ = stream.flush().await;
        return Err(SecurityFailure::WrongSecret);
    }
    stream.write_all(&[ACCEPTED]).await.map_err(io_failure)?;
    stream.flush().await.map_err(io_failure)?;
    Ok(())
}

/// Runs both sides over an in-memory pipe; for tests of code that builds on the handshake.
#[doc(hidden)]
pub async fn run_pair(
    dialer_secret: &ClusterSecret,
    acceptor_secret: &ClusterSecret,
    channel: Channel,
) -> (Result<(), SecurityFailure>, Result<(), SecurityFailure>) {
    let (mut a, mut b) = tokio::io::duplex(1024);
    tokio::join!(
        async {
            let r = dial(&mut a, dialer_secret, channel, &[]).await;
            drop(a);
            r
        },
        async {
            let r = accept(&mut b, acceptor_secret, channel, &[]).await;
            drop(b);
            r
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secret(text: &str) -> ClusterSecret {
        ClusterSecret::new(text).expect("long enough")
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    #[test]
    fn same_secret_is_accepted_on_both_sides() {
        let s = secret("0123456789abcdef-shared");
        let (d, a) = rt().block_on(run_pair(&s, &s, Channel::Rpc));
        assert_eq!(d, Ok(()));
        assert_eq!(a, Ok(()));
    }

    #[test]
    fn different_secrets_are_refused_by_the_dialer_first() {
        let (d, a) = rt().block_on(run_pair(
            &secret("0123456789abcdef-one"),
            &secret("0123456789abcdef-two"),
            Channel::Data,
        ));
        // The dialer sees the acceptor's proof fail and never sends its own.
        assert_eq!(d, Err(SecurityFailure::WrongSecret));
        assert_eq!(a, Err(SecurityFailure::RefusedByPeer));
    }

    #[test]
    fn a_dialer_for_another_channel_is_refused() {
        let s = secret("0123456789abcdef-shared");
        let (mut a, mut b) = tokio::io::duplex(1024);
        let (d, acc) = rt().block_on(async {
            tokio::join!(
                async {
                    let r = dial(&mut a, &s, Channel::Blob, &[]).await;
                    drop(a);
                    r
                },
                async {
                    let r = accept(&mut b, &s, Channel::Rpc, &[]).await;
                    drop(b);
                    r
                }
            )
        });
        assert_eq!(
            acc,
            Err(SecurityFailure::WrongChannel {
                expected: Channel::Rpc,
                requested: Channel::Blob
            })
        );
        assert!(d.is_err());
    }

    /// An attacker who recorded a whole successful handshake replays the dialer's bytes
    /// (HELLO and PROOF) against the acceptor: the acceptor's fresh nonce makes the recorded
    /// proof wrong.
    #[test]
    fn a_replayed_dialer_transcript_is_refused() {
        let s = secret("0123456789abcdef-shared");
        rt().block_on(async {
            // Record the dialer's bytes of a genuine handshake.
            let (mut a, mut b) = tokio::io::duplex(4096);
            let acceptor = tokio::spawn({
                let s = s.clone();
                async move { accept(&mut b, &s, Channel::Rpc, &[]).await }
            });
            let mut recorder = Recorder {
                inner: &mut a,
                written: Vec::new(),
            };
            dial(&mut recorder, &s, Channel::Rpc, &[])
                .await
                .expect("genuine");
            let transcript = recorder.written;
            assert_eq!(acceptor.await.expect("join"), Ok(()));
            assert_eq!(transcript.len(), HELLO_LEN + PROOF_LEN);

            // Replay it to a fresh acceptor.
            let (mut a, mut b) = tokio::io::duplex(4096);
            let acceptor = tokio::spawn({
                let s = s.clone();
                async move { accept(&mut b, &s, Channel::Rpc, &[]).await }
            });
            a.write_all(&transcript).await.expect("write");
            let mut answer = vec![0u8; CHALLENGE_LEN + 1];
            a.read_exact(&mut answer)
                .await
                .expect("challenge and verdict");
            assert_eq!(answer[CHALLENGE_LEN], REFUSED);
            assert_eq!(
                acceptor.await.expect("join"),
                Err(SecurityFailure::WrongSecret)
            );
        });
    }

    #[test]
    fn a_peer_without_the_handshake_is_named_as_such() {
        let s = secret("0123456789abcdef-shared");
        let (mut a, mut b) = tokio::io::duplex(1024);
        let r = rt().block_on(async {
            a.write_all(b"RFLINK\x00\x01 and the rest of an rpc preamble")
                .await
                .expect("write");
            accept(&mut b, &s, Channel::Rpc, &[]).await
        });
        assert_eq!(r, Err(SecurityFailure::NoSecretHandshake));
    }

    #[test]
    fn the_binding_is_part_of_the_proof() {
        let s = secret("0123456789abcdef-shared");
        let (mut a, mut b) = tokio::io::duplex(1024);
        let (d, acc) = rt().block_on(async {
            tokio::join!(
                async {
                    let r = dial(&mut a, &s, Channel::Rpc, b"session one").await;
                    drop(a);
                    r
                },
                async {
                    let r = accept(&mut b, &s, Channel::Rpc, b"session two").await;
                    drop(b);
                    r
                }
            )
        });
        assert_eq!(d, Err(SecurityFailure::WrongSecret));
        assert!(acc.is_err());
    }

    struct Recorder<'a, S> {
        inner: &'a mut S,
        written: Vec<u8>,
    }

    impl<S: AsyncRead + Unpin> AsyncRead for Recorder<'_, S> {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut *self.inner).poll_read(cx, buf)
        }
    }

    impl<S: AsyncWrite + Unpin> AsyncWrite for Recorder<'_, S> {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            let poll = std::pin::Pin::new(&mut *self.inner).poll_write(cx, buf);
            if let std::task::Poll::Ready(Ok(n)) = poll {
                self.written.extend_from_slice(&buf[..n]);
            }
            poll
        }
        fn poll_flush(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut *self.inner).poll_flush(cx)
        }
        fn poll_shutdown(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut *self.inner).poll_shutdown(cx)
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever a peer sends, the acceptor ends with an error (never a panic, never an
        /// acceptance) and without waiting for more than the bytes it was given.
        #[test]
        fn arbitrary_bytes_never_pass_or_panic_the_acceptor(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let s = secret("0123456789abcdef-shared");
            let r = rt().block_on(async {
                let (mut a, mut b) = tokio::io::duplex(4096);
                a.write_all(&bytes).await.expect("write");
                drop(a);
                accept(&mut b, &s, Channel::Rpc, &[]).await
            });
            prop_assert!(r.is_err());
        }

        /// Arbitrary bytes that start like a HELLO get past the magic and still fail.
        #[test]
        fn arbitrary_hellos_never_pass_or_panic_the_acceptor(
            channel in any::<u8>(),
            rest in proptest::collection::vec(any::<u8>(), 0..120),
        ) {
            let s = secret("0123456789abcdef-shared");
            let mut bytes = MAGIC.to_vec();
            bytes.push(VERSION);
            bytes.push(channel);
            bytes.extend_from_slice(&rest);
            let r = rt().block_on(async {
                let (mut a, mut b) = tokio::io::duplex(4096);
                a.write_all(&bytes).await.expect("write");
                drop(a);
                accept(&mut b, &s, Channel::Rpc, &[]).await
            });
            prop_assert!(r.is_err());
        }

        /// Whatever an acceptor answers, the dialer ends with an error, never a panic.
        #[test]
        fn arbitrary_answers_never_pass_or_panic_the_dialer(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let s = secret("0123456789abcdef-shared");
            let r = rt().block_on(async {
                let (mut a, mut b) = tokio::io::duplex(4096);
                b.write_all(&bytes).await.expect("write");
                drop(b);
                dial(&mut a, &s, Channel::Data, &[]).await
            });
            prop_assert!(r.is_err());
        }

        #[test]
        fn parsing_never_panics(hello in proptest::array::uniform32(any::<u8>()), more in proptest::array::uniform32(any::<u8>())) {
            let mut h = [0u8; HELLO_LEN];
            h[..32].copy_from_slice(&hello);
            h[32..].copy_from_slice(&more[..HELLO_LEN - 32]);
            let _ = parse_hello(&h);
            let mut c = [0u8; CHALLENGE_LEN];
            for (i, b) in c.iter_mut().enumerate() {
                *b = hello[i % 32] ^ more[(i * 7) % 32];
            }
            let _ = parse_challenge(&c);
        }
    }
}
