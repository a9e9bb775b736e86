//! SFTP version 3 wire format (draft-ietf-secsh-filexfer-02) plus the
//! OpenSSH extensions this server answers.

pub const SSH_FXP_INIT: u8 = 1;
pub const SSH_FXP_VERSION: u8 = 2;
pub const SSH_FXP_OPEN: u8 = 3;
pub const SSH_FXP_CLOSE: u8 = 4;
pub const SSH_FXP_READ: u8 = 5;
pub const SSH_FXP_WRITE: u8 = 6;
pub const SSH_FXP_LSTAT: u8 = 7;
pub const SSH_FXP_FSTAT: u8 = 8;
pub const SSH_FXP_SETSTAT: u8 = 9;
pub const SSH_FXP_FSETSTAT: u8 = 10;
pub const SSH_FXP_OPENDIR: u8 = 11;
pub const SSH_FXP_READDIR: u8 = 12;
pub const SSH_FXP_REMOVE: u8 = 13;
pub const SSH_FXP_MKDIR: u8 = 14;
pub const SSH_FXP_RMDIR: u8 = 15;
pub const SSH_FXP_REALPATH: u8 = 16;
pub const SSH_FXP_STAT: u8 = 17;
pub const SSH_FXP_RENAME: u8 = 18;
pub const SSH_FXP_READLINK: u8 = 19;
pub const SSH_FXP_SYMLINK: u8 = 20;
pub const SSH_FXP_STATUS: u8 = 101;
pub const SSH_FXP_HANDLE: u8 = 102;
pub const SSH_FXP_DATA: u8 = 103;
pub const SSH_FXP_NAME: u8 = 104;
pub const SSH_FXP_ATTRS: u8 = 105;
pub const SSH_FXP_EXTENDED: u8 = 200;
pub const SSH_FXP_EXTENDED_REPLY: u8 = 201;

pub const SSH_FX_OK: u32 = 0;
pub const SSH_FX_EOF: u32 = 1;
pub const SSH_FX_NO_SUCH_FILE: u32 = 2;
pub const SSH_FX_PERMISSION_DENIED: u32 = 3;
pub const SSH_FX_FAILURE: u32 = 4;
pub const SSH_FX_BAD_MESSAGE: u32 = 5;
pub const SSH_FX_OP_UNSUPPORTED: u32 = 8;

pub const SSH_FXF_READ: u32 = 0x01;
pub const SSH_FXF_WRITE: u32 = 0x02;
pub const SSH_FXF_APPEND: u32 = 0x04;
pub const SSH_FXF_CREAT: u32 = 0x08;
pub const SSH_FXF_TRUNC: u32 = 0x10;
pub const SSH_FXF_EXCL: u32 = 0x20;

pub const ATTR_SIZE: u32 = 0x01;
pub const ATTR_UIDGID: u32 = 0x02;
pub const ATTR_PERMISSIONS: u32 = 0x04;
pub const ATTR_ACMODTIME: u32 = 0x08;
pub const ATTR_EXTENDED: u32 = 0x8000_0000;

/// Largest packet accepted from the client (same as OpenSSH's sftp-server).
pub const MAX_PACKET: usize = 256 * 1024;
/// Largest READ payload returned and WRITE payload advertised.
pub const MAX_IO: u32 = (MAX_PACKET - 1024) as u32;

/// A malformed request: too short or an inconsistent length field.
#[derive(Debug)]
pub struct Malformed;

/// Cursor over one request's payload.
pub struct Msg<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Msg<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Msg { buf, pos: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        let end = self.pos.checked_add(n).ok_or(Malformed)?;
        let s = self.buf.get(self.pos..end).ok_or(Malformed)?;
        self.pos = end;
        Ok(s)
    }

    pub fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.take(1)?[0])
    }

    pub fn u32(&mut self) -> Result<u32, Malformed> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u64(&mut self) -> Result<u64, Malformed> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    pub fn string(&mut self) -> Result<&'a [u8], Malformed> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    pub fn attrs(&mut self) -> Result<Attrs, Malformed> {
        let flags = self.u32()?;
        let mut a = Attrs::default();
        if flags & ATTR_SIZE != 0 {
            a.size = Some(self.u64()?);
        }
        if flags & ATTR_UIDGID != 0 {
            a.uid_gid = Some((self.u32()?, self.u32()?));
        }
        if flags & ATTR_PERMISSIONS != 0 {
            a.perm = Some(self.u32()?);
        }
        if flags & ATTR_ACMODTIME != 0 {
            a.times = Some((self.u32()?, self.u32()?));
        }
        if flags & ATTR_EXTENDED != 0 {
            let n = self.u32()?;
            for _ in 0..n {
                self.string()?;
                self.string()?;
            }
        }
        Ok(a)
    }
}

/// SFTP v3 file attributes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Attrs {
    pub size: Option<u64>,
    pub uid_gid: Option<(u32, u32)>,
    pub perm: Option<u32>,
    /// (atime, mtime) in seconds since the epoch.
    pub times: Option<(u32, u32)>,
}

impl Attrs {
    pub fn from_stat(st: &libc::stat) -> Self {
        Attrs {
            size: Some(st.st_size as u64),
            uid_gid: Some((st.st_uid, st.st_gid)),
            perm: Some(st.st_mode),
            times: Some((st.st_atime as u32, st.st_mtime as u32)),
        }
    }
}

/// Builder of one outgoing packet; the length prefix is filled by `finish`.
pub struct Out {
    pub buf: Vec<u8>,
}

impl Out {
    pub fn new(ty: u8, id: Option<u32>) -> Self {
        Self::with_capacity(ty, id, 64)
    }

    pub fn with_capacity(ty: u8, id: Option<u32>, cap: usize) -> Self {
        let mut buf = Vec::with_capacity(cap + 9);
        buf.extend_from_slice(&[0, 0, 0, 0, ty]);
        if let Some(id) = id {
            buf.extend_from_slice(&id.to_be_bytes());
        }
        Out { buf }
    }

    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn string(&mut self, s: &[u8]) -> &mut Self {
        self.u32(s.len() as u32);
        self.buf.extend_from_slice(s);
        self
    }

    pub fn attrs(&mut self, a: &Attrs) -> &mut Self {
        let mut flags = 0;
        if a.size.is_some() {
            flags |= ATTR_SIZE;
        }
        if a.uid_gid.is_some() {
            flags |= ATTR_UIDGID;
        }
        if a.perm.is_some() {
            flags |= ATTR_PERMISSIONS;
        }
        if a.times.is_some() {
            flags |= ATTR_ACMODTIME;
        }
        self.u32(flags);
        if let Some(s) = a.size {
            self.u64(s);
        }
        if let Some((u, g)) = a.uid_gid {
            self.u32(u).u32(g);
        }
        if let Some(p) = a.perm {
            self.u32(p);
        }
        if let Some((at, mt)) = a.times {
            self.u32(at).u32(mt);
        }
        self
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn finish(mut self) -> Vec<u8> {
        let n = (self.buf.len() - 4) as u32;
        self.buf[..4].copy_from_slice(&n.to_be_bytes());
        self.buf
    }
}

/// An `ls -l` style line for SSH_FXP_NAME's longname (numeric owners: the
/// server never consults the engine's user database).
pub fn longname(name: &[u8], st: Option<&libc::stat>) -> Vec<u8> {
    let Some(st) = st else {
        return name.to_vec();
    };
    let m = st.st_mode;
    let kind = match m & libc::S_IFMT {
        libc::S_IFDIR => 'd',
        libc::S_IFLNK => 'l',
        libc::S_IFCHR => 'c',
        libc::S_IFBLK => 'b',
        libc::S_IFIFO => 'p',
        libc::S_IFSOCK => 's',
        _ => '-',
    };
    let mut s = String::with_capacity(64);
    s.push(kind);
    let bits = [
        (0o400, 'r'),
        (0o200, 'w'),
        (0o100, 'x'),
        (0o040, 'r'),
        (0o020, 'w'),
        (0o010, 'x'),
        (0o004, 'r'),
        (0o002, 'w'),
        (0o001, 'x'),
    ];
    for (i, (bit, c)) in bits.iter().enumerate() {
        let mut ch = if m & bit != 0 { *c } else { '-' };
        let special = match i {
            2 => m & libc::S_ISUID != 0,
            5 => m & libc::S_ISGID != 0,
            8 => m & libc::S_ISVTX != 0,
            _ => false,
        };
        if special {
            ch = match (i, ch == 'x') {
                (8, true) => 't',
                (8, false) => 'T',
                (_, true) => 's',
                (_, false) => 'S',
            };
        }
        s.push(ch);
    }
    s.push_str(&format!(
        " {:>3} {:<8} {:<8} {:>8} {} ",
        st.st_nlink, st.st_uid, st.st_gid, st.st_size, st.st_mtime
    ));
    let mut out = s.into_bytes();
    out.extend_from_slice(name);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attrs_round_trip() {
        let a = Attrs {
            size: Some(7),
            uid_gid: Some((1, 2)),
            perm: Some(0o100644),
            times: Some((3, 4)),
        };
        let mut o = Out::new(SSH_FXP_ATTRS, Some(9));
        o.attrs(&a);
        let v = o.finish();
        assert_eq!(
            u32::from_be_bytes([v[0], v[1], v[2], v[3]]) as usize,
            v.len() - 4
        );
        let mut m = Msg::new(&v[9..]);
        assert_eq!(m.attrs().unwrap(), a);
        assert!(m.u8().is_err());
    }

    #[test]
    fn short_string_is_malformed() {
        let mut m = Msg::new(&[0, 0, 0, 9, b'a']);
        assert!(m.string().is_err());
    }
}
