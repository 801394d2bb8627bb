//! Frames on the helper's pipe: a 4-byte big-endian length, then that many
//! bytes. Both ends cap a frame at [`MAX_FRAME`]: the largest message (an
//! endorsement with its EK certificate) is a few KiB.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest frame either end sends or accepts.
pub const MAX_FRAME: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("the pipe closed")]
    Closed,
    #[error("a frame of {0} bytes (at most {MAX_FRAME})")]
    TooLarge(usize),
    #[error("an unreadable message: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The next frame; None when the pipe closed between frames.
pub async fn read_frame(r: &mut (impl AsyncRead + Unpin)) -> Result<Option<Vec<u8>>, FrameError> {
    let mut len = [0u8; 4];
    let first = r.read(&mut len).await?;
    if first == 0 {
        return Ok(None);
    }
    read_exact(r, &mut len[first..]).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let mut buf = vec![0u8; len];
    read_exact(r, &mut buf).await?;
    Ok(Some(buf))
}

async fn read_exact(r: &mut (impl AsyncRead + Unpin), buf: &mut [u8]) -> Result<(), FrameError> {
    match r.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(FrameError::Closed),
        Err(e) => Err(e.into()),
    }
}

/// Writes `msg` as one frame and flushes it.
pub async fn write_frame(
    w: &mut (impl AsyncWrite + Unpin),
    msg: &impl prost::Message,
) -> Result<(), FrameError> {
    let len = msg.encoded_len();
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let mut buf = Vec::with_capacity(4 + len);
    buf.extend_from_slice(&(len as u32).to_be_bytes());
    msg.encode_raw(&mut buf);
    w.write_all(&buf).await?;
    w.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_proto::tpm::helper::{KeyDir, Reply};

    #[tokio::test]
    async fn a_frame_round_trips_and_eof_between_frames_is_none() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let msg = KeyDir {
            path: b"/var/lib/tessera/agent".to_vec(),
        };
        write_frame(&mut a, &msg).await.unwrap();
        drop(a);
        let got = read_frame(&mut b).await.unwrap().unwrap();
        assert_eq!(<KeyDir as prost::Message>::decode(&got[..]).unwrap(), msg);
        assert!(read_frame(&mut b).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn an_oversized_length_is_refused_before_reading_the_body() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&(MAX_FRAME as u32 + 1).to_be_bytes())
            .await
            .unwrap();
        let err = read_frame(&mut b).await.unwrap_err();
        assert!(
            matches!(err, FrameError::TooLarge(n) if n == MAX_FRAME + 1),
            "{err}"
        );
        a.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        assert!(matches!(
            read_frame(&mut b).await,
            Err(FrameError::TooLarge(_))
        ));
    }

    #[tokio::test]
    async fn a_truncated_frame_is_closed_not_a_short_message() {
        for bytes in [&[0u8, 0][..], &[0, 0, 0, 9, 1, 2, 3][..]] {
            let (mut a, mut b) = tokio::io::duplex(64);
            a.write_all(bytes).await.unwrap();
            drop(a);
            assert!(matches!(read_frame(&mut b).await, Err(FrameError::Closed)));
        }
    }

    #[tokio::test]
    async fn an_oversized_message_is_not_sent() {
        let (mut a, _b) = tokio::io::duplex(64);
        let reply = Reply {
            result: Some(tessera_proto::tpm::helper::reply::Result::Error(
                "x".repeat(MAX_FRAME),
            )),
        };
        assert!(matches!(
            write_frame(&mut a, &reply).await,
            Err(FrameError::TooLarge(_))
        ));
    }
}
