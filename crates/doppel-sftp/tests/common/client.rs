//! A minimal SFTP v3 client that writes packets by hand, one request at a
//! time, to probe the server directly.

use std::path::Path;

use doppel_sftp::{serve_sftp, ServeOptions, SessionStats, SftpError};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};
use tokio::task::JoinHandle;

pub const FX_OK: u32 = 0;
pub const FX_EOF: u32 = 1;
pub const FX_NO_SUCH_FILE: u32 = 2;
pub const FX_PERMISSION_DENIED: u32 = 3;

pub const READ: u32 = 1;
pub const WRITE: u32 = 2;
pub const APPEND: u32 = 4;
pub const CREAT: u32 = 8;
pub const TRUNC: u32 = 0x10;
pub const EXCL: u32 = 0x20;

#[derive(Debug)]
pub enum Reply {
    Status(u32, String),
    Handle(Vec<u8>),
    Data(Vec<u8>),
    Name(Vec<Vec<u8>>),
    Attrs {
        size: Option<u64>,
        perm: Option<u32>,
    },
    Extended(Vec<u8>),
}

impl Reply {
    pub fn code(&self) -> Option<u32> {
        match self {
            Reply::Status(c, _) => Some(*c),
            _ => None,
        }
    }
    pub fn is_ok_status(&self) -> bool {
        self.code() == Some(FX_OK)
    }
}

pub struct Client {
    r: ReadHalf<DuplexStream>,
    w: WriteHalf<DuplexStream>,
    id: u32,
    pub server: Option<JoinHandle<Result<SessionStats, SftpError>>>,
    pub extensions: Vec<String>,
}

fn s(buf: &mut Vec<u8>, v: &[u8]) {
    buf.extend_from_slice(&(v.len() as u32).to_be_bytes());
    buf.extend_from_slice(v);
}

fn be32(b: &[u8], at: &mut usize) -> u32 {
    let v = u32::from_be_bytes(b[*at..*at + 4].try_into().unwrap());
    *at += 4;
    v
}

fn string(b: &[u8], at: &mut usize) -> Vec<u8> {
    let n = be32(b, at) as usize;
    let v = b[*at..*at + n].to_vec();
    *at += n;
    v
}

impl Client {
    pub async fn start(root: &Path, opts: ServeOptions) -> Client {
        let (a, b) = tokio::io::duplex(1 << 20);
        let (sr, sw) = tokio::io::split(b);
        let root = root.to_path_buf();
        let server = tokio::spawn(async move { serve_sftp(&root, opts, sr, sw).await });
        let (r, w) = tokio::io::split(a);
        let mut c = Client {
            r,
            w,
            id: 0,
            server: Some(server),
            extensions: vec![],
        };
        c.w.write_all(&[0, 0, 0, 5, 1, 0, 0, 0, 3]).await.unwrap();
        let pkt = c.packet().await;
        assert_eq!(pkt[0], 2, "VERSION");
        let mut at = 1;
        assert_eq!(be32(&pkt, &mut at), 3);
        while at < pkt.len() {
            let name = string(&pkt, &mut at);
            let _ = string(&pkt, &mut at);
            c.extensions.push(String::from_utf8(name).unwrap());
        }
        c
    }

    async fn packet(&mut self) -> Vec<u8> {
        let mut len = [0u8; 4];
        self.r.read_exact(&mut len).await.unwrap();
        let mut pkt = vec![0u8; u32::from_be_bytes(len) as usize];
        self.r.read_exact(&mut pkt).await.unwrap();
        pkt
    }

    /// Send one request (type + body after the id) and parse the reply.
    pub async fn call(&mut self, ty: u8, body: &[u8]) -> Reply {
        self.id += 1;
        let mut p = Vec::with_capacity(body.len() + 9);
        p.extend_from_slice(&((body.len() + 5) as u32).to_be_bytes());
        p.push(ty);
        p.extend_from_slice(&self.id.to_be_bytes());
        p.extend_from_slice(body);
        self.w.write_all(&p).await.unwrap();
        let pkt = self.packet().await;
        let mut at = 1;
        assert_eq!(be32(&pkt, &mut at), self.id, "reply id");
        match pkt[0] {
            101 => {
                let code = be32(&pkt, &mut at);
                let msg = String::from_utf8_lossy(&string(&pkt, &mut at)).into_owned();
                Reply::Status(code, msg)
            }
            102 => Reply::Handle(string(&pkt, &mut at)),
            103 => Reply::Data(string(&pkt, &mut at)),
            104 => {
                let n = be32(&pkt, &mut at);
                let mut names = vec![];
                for _ in 0..n {
                    names.push(string(&pkt, &mut at));
                    let _long = string(&pkt, &mut at);
                    let flags = be32(&pkt, &mut at);
                    at += attrs_len(flags);
                }
                Reply::Name(names)
            }
            105 => {
                let flags = be32(&pkt, &mut at);
                let mut size = None;
                let mut perm = None;
                if flags & 1 != 0 {
                    size = Some(u64::from_be_bytes(pkt[at..at + 8].try_into().unwrap()));
                    at += 8;
                }
                if flags & 2 != 0 {
                    at += 8;
                }
                if flags & 4 != 0 {
                    perm = Some(be32(&pkt, &mut at));
                }
                Reply::Attrs { size, perm }
            }
            201 => Reply::Extended(pkt[at..].to_vec()),
            t => panic!("unexpected reply type {t}"),
        }
    }

    pub async fn open(&mut self, path: &str, flags: u32) -> Reply {
        let mut b = vec![];
        s(&mut b, path.as_bytes());
        b.extend_from_slice(&flags.to_be_bytes());
        b.extend_from_slice(&0u32.to_be_bytes());
        self.call(3, &b).await
    }

    pub async fn with_handle(&mut self, ty: u8, h: &[u8], rest: &[u8]) -> Reply {
        let mut b = vec![];
        s(&mut b, h);
        b.extend_from_slice(rest);
        self.call(ty, &b).await
    }

    pub async fn close(&mut self, h: &[u8]) -> Reply {
        self.with_handle(4, h, &[]).await
    }

    pub async fn read(&mut self, h: &[u8], off: u64, len: u32) -> Reply {
        let mut rest = off.to_be_bytes().to_vec();
        rest.extend_from_slice(&len.to_be_bytes());
        self.with_handle(5, h, &rest).await
    }

    pub async fn write(&mut self, h: &[u8], off: u64, data: &[u8]) -> Reply {
        let mut rest = off.to_be_bytes().to_vec();
        s(&mut rest, data);
        self.with_handle(6, h, &rest).await
    }

    /// Calls taking one path (STAT 17, LSTAT 7, OPENDIR 11, REMOVE 13,
    /// RMDIR 15, REALPATH 16, READLINK 19).
    pub async fn path_op(&mut self, ty: u8, path: &str) -> Reply {
        let mut b = vec![];
        s(&mut b, path.as_bytes());
        self.call(ty, &b).await
    }

    pub async fn two_paths(&mut self, ty: u8, a: &str, b2: &str) -> Reply {
        let mut b = vec![];
        s(&mut b, a.as_bytes());
        s(&mut b, b2.as_bytes());
        self.call(ty, &b).await
    }

    pub async fn mkdir(&mut self, path: &str) -> Reply {
        let mut b = vec![];
        s(&mut b, path.as_bytes());
        b.extend_from_slice(&0u32.to_be_bytes());
        self.call(14, &b).await
    }

    pub async fn chmod(&mut self, path: &str, mode: u32) -> Reply {
        let mut b = vec![];
        s(&mut b, path.as_bytes());
        b.extend_from_slice(&4u32.to_be_bytes());
        b.extend_from_slice(&mode.to_be_bytes());
        self.call(9, &b).await
    }

    pub async fn extended(&mut self, name: &str, args: &[&str]) -> Reply {
        let mut b = vec![];
        s(&mut b, name.as_bytes());
        for a in args {
            s(&mut b, a.as_bytes());
        }
        self.call(200, &b).await
    }

    /// Close the client's side and wait for the server to end.
    pub async fn finish(mut self) -> Result<SessionStats, SftpError> {
        self.w.shutdown().await.unwrap();
        drop(self.w);
        self.server.take().unwrap().await.unwrap()
    }
}

fn attrs_len(flags: u32) -> usize {
    let mut n = 0;
    if flags & 1 != 0 {
        n += 8;
    }
    if flags & 2 != 0 {
        n += 8;
    }
    if flags & 4 != 0 {
        n += 4;
    }
    if flags & 8 != 0 {
        n += 8;
    }
    n
}
