//! C2SP signed notes, tlog checkpoints and Go-style verifier keys.
//!
//! A checkpoint is the note body `<origin>\n<size>\n<b64 root>\n`, a blank
//! line, then `— <name> b64(key ID || signature)` lines. The key ID is the
//! first 4 bytes of SHA-256(name || 0x0A || 0x01 || public key), and the
//! verifier key is `<name>+<hex key ID>+b64(0x01 || public key)`.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use crate::event::signature::{b64, b64_decode, parse_public_key};
use crate::event::{sha256, Hash};

/// The Ed25519 algorithm byte of signed-note keys.
const ALG_ED25519: u8 = 0x01;

/// Why a note, a checkpoint, a verifier key or an origin is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    /// The origin is empty.
    #[error("the origin is empty; give a name like vigil.example/prod/shard-0")]
    EmptyOrigin,
    /// The origin holds `+`.
    #[error("the origin {0:?} contains '+', which signed-note key names cannot hold")]
    PlusInOrigin(String),
    /// The origin holds white space or a control character.
    #[error(
        "the origin {name:?} contains {found:?}; key names have no spaces or control characters"
    )]
    SpaceInOrigin {
        /// The origin.
        name: String,
        /// The character found.
        found: char,
    },
    /// A verifier key is malformed.
    #[error("{0}")]
    VerifierKey(&'static str),
    /// A verifier key's public key is not a usable Ed25519 key.
    #[error("the verifier key's public key is unusable: {0}")]
    VerifierPublicKey(#[source] crate::event::signature::PublicKeyError),
    /// A note is not laid out as a signed note.
    #[error("{0}")]
    Layout(String),
    /// A signature by the key is present but does not verify.
    #[error("the signature by {0} does not verify: the note was altered or signed by another key")]
    BadSignature(String),
    /// No signature by the key.
    #[error("the note has no signature by {name} with key ID {key_id}")]
    NoSignature {
        /// The key's name.
        name: String,
        /// The key ID, hex.
        key_id: String,
    },
    /// The checkpoint body does not parse.
    #[error("{0}")]
    Checkpoint(String),
    /// The checkpoint is of another log.
    #[error("the checkpoint's origin {origin:?} is not the verifier key's name {name:?}")]
    OtherOrigin {
        /// The checkpoint's origin.
        origin: String,
        /// The verifier key's name.
        name: String,
    },
}

/// Checks a signed-note key name (a log origin): non-empty, printable, no
/// white space, no `+`.
pub fn check_origin(name: &str) -> Result<(), NoteError> {
    if name.is_empty() {
        return Err(NoteError::EmptyOrigin);
    }
    if name.contains('+') {
        return Err(NoteError::PlusInOrigin(name.into()));
    }
    if let Some(found) = name.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(NoteError::SpaceInOrigin {
            name: name.into(),
            found,
        });
    }
    Ok(())
}

/// The 4-byte key ID of an Ed25519 key under a note key name.
pub fn key_id(name: &str, public: &VerifyingKey) -> [u8; 4] {
    let mut buf = Vec::with_capacity(name.len() + 34);
    buf.extend_from_slice(name.as_bytes());
    buf.push(b'\n');
    buf.push(ALG_ED25519);
    buf.extend_from_slice(public.as_bytes());
    let h = sha256(&buf);
    [h[0], h[1], h[2], h[3]]
}

/// Signs notes (checkpoints) under a name.
#[derive(Clone)]
pub struct NoteSigner {
    name: String,
    key: SigningKey,
    key_id: [u8; 4],
    /// Keys that add their signature after the first (a log key rotation).
    cosigners: Vec<(SigningKey, [u8; 4])>,
}

impl NoteSigner {
    /// A signer for `name` (already checked with [`check_origin`]).
    pub fn new(name: &str, key: SigningKey) -> NoteSigner {
        let key_id = key_id(name, &key.verifying_key());
        NoteSigner {
            name: name.to_string(),
            key,
            key_id,
            cosigners: Vec::new(),
        }
    }

    /// Also signs every note with `key` (after the main key's line).
    pub fn cosigned_by(mut self, key: SigningKey) -> NoteSigner {
        let id = key_id(&self.name, &key.verifying_key());
        self.cosigners.push((key, id));
        self
    }

    /// The name signatures are made under.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The verifier key, as auditors pass to `vigil verify-proof --vkey`.
    pub fn verifier_key(&self) -> String {
        verifier_key(&self.name, &self.key.verifying_key())
    }

    /// Signs a note body (which must end in a newline) and returns the note.
    pub fn sign(&self, body: &str) -> String {
        debug_assert!(body.ends_with('\n'));
        let mut note = format!("{body}\n");
        let keys = std::iter::once((&self.key, &self.key_id))
            .chain(self.cosigners.iter().map(|(k, id)| (k, id)));
        for (key, id) in keys {
            let sig = key.sign(body.as_bytes()).to_bytes();
            let mut blob = Vec::with_capacity(68);
            blob.extend_from_slice(id);
            blob.extend_from_slice(&sig);
            note.push_str(&format!("\u{2014} {} {}\n", self.name, b64(&blob)));
        }
        note
    }
}

/// The verifier key string of a public key under a name.
pub fn verifier_key(name: &str, public: &VerifyingKey) -> String {
    let mut blob = vec![ALG_ED25519];
    blob.extend_from_slice(public.as_bytes());
    format!(
        "{name}+{}+{}",
        crate::hexenc::encode(key_id(name, public)),
        b64(&blob)
    )
}

/// A parsed verifier key.
#[derive(Debug, Clone)]
pub struct NoteVerifier {
    /// The key name (a log origin).
    pub name: String,
    /// The key ID.
    pub key_id: [u8; 4],
    /// The public key.
    pub key: VerifyingKey,
}

impl NoteVerifier {
    /// Parses `<name>+<hex key ID>+<b64(0x01 || key)>`, checking the ID.
    pub fn parse(vkey: &str) -> Result<NoteVerifier, NoteError> {
        use NoteError::VerifierKey as Bad;
        let vkey = vkey.trim();
        let mut parts = vkey.splitn(3, '+');
        let (Some(name), Some(id), Some(blob)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(Bad(
                "a verifier key has the form <name>+<8 hex digits>+<base64 key>",
            ));
        };
        check_origin(name)?;
        let id = hex::decode(id)
            .ok()
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .ok_or(Bad("the verifier key's ID is not 8 hex digits"))?;
        let blob = b64_decode(blob).ok_or(Bad("the verifier key's key part is not base64"))?;
        if blob.len() != 33 || blob[0] != ALG_ED25519 {
            return Err(Bad(
                "the verifier key is not an Ed25519 key (0x01 followed by 32 bytes)",
            ));
        }
        let key = parse_public_key(&blob[1..]).map_err(NoteError::VerifierPublicKey)?;
        if key_id(name, &key) != id {
            return Err(Bad("the verifier key's ID does not match its name and key"));
        }
        Ok(NoteVerifier {
            name: name.to_string(),
            key_id: id,
            key,
        })
    }

    /// Checks that `note` carries a valid signature by this key and returns
    /// its body. Signature lines by other keys are ignored.
    pub fn verify<'a>(&self, note: &'a str) -> Result<&'a str, NoteError> {
        let (body, sigs) = split_note(note)?;
        let mut found = false;
        for line in sigs.lines() {
            let Some(rest) = line.strip_prefix("\u{2014} ") else {
                return Err(NoteError::Layout(format!(
                    "signature line {line:?} does not start with an em dash and a space"
                )));
            };
            let Some((name, sig)) = rest.split_once(' ') else {
                return Err(NoteError::Layout(format!(
                    "signature line {line:?} has no signature"
                )));
            };
            if name != self.name {
                continue;
            }
            let blob = b64_decode(sig)
                .ok_or_else(|| NoteError::Layout("a signature is not base64".into()))?;
            if blob.len() != 68 || blob[..4] != self.key_id {
                continue;
            }
            found = true;
            let sig = Signature::from_bytes(blob[4..].try_into().expect("68 - 4 = 64 bytes"));
            if self.key.verify_strict(body.as_bytes(), &sig).is_ok() {
                return Ok(body);
            }
        }
        Err(if found {
            NoteError::BadSignature(self.name.clone())
        } else {
            NoteError::NoSignature {
                name: self.name.clone(),
                key_id: crate::hexenc::encode(self.key_id),
            }
        })
    }
}

/// Splits a note into its body (ending in a newline) and signature lines.
pub fn split_note(note: &str) -> Result<(&str, &str), NoteError> {
    if !note.ends_with('\n') {
        return Err(NoteError::Layout(
            "a signed note ends with a newline".into(),
        ));
    }
    let idx = note.find("\n\n").ok_or_else(|| {
        NoteError::Layout("a signed note has a blank line before its signatures".into())
    })?;
    Ok((&note[..idx + 1], &note[idx + 2..]))
}

/// The contents of a checkpoint body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointBody {
    /// The log's origin.
    pub origin: String,
    /// The tree size.
    pub size: u64,
    /// The root hash.
    pub root: Hash,
}

impl CheckpointBody {
    /// The note body text.
    pub fn to_text(&self) -> String {
        format!("{}\n{}\n{}\n", self.origin, self.size, b64(&self.root))
    }

    /// Parses a checkpoint note body (extension lines after the root are allowed).
    pub fn parse(body: &str) -> Result<CheckpointBody, NoteError> {
        let bad = |why: String| NoteError::Checkpoint(why);
        let mut lines = body.lines();
        let mut line = |name: &str| {
            lines
                .next()
                .ok_or_else(|| bad(format!("the checkpoint has no {name} line")))
        };
        let origin = line("origin")?;
        let size = line("size")?;
        let root = line("root hash")?;
        if size.is_empty()
            || (size.len() > 1 && size.starts_with('0'))
            || !size.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(bad(format!(
                "the checkpoint size {size:?} is not a decimal number"
            )));
        }
        let size: u64 = size
            .parse()
            .map_err(|_| bad(format!("the checkpoint size {size:?} is too large")))?;
        let root = b64_decode(root)
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| bad("the checkpoint root is not base64 of 32 bytes".into()))?;
        Ok(CheckpointBody {
            origin: origin.to_string(),
            size,
            root,
        })
    }
}

/// Verifies a checkpoint note with a verifier key and returns its body.
pub fn verify_checkpoint(note: &str, verifier: &NoteVerifier) -> Result<CheckpointBody, NoteError> {
    let body = verifier.verify(note)?;
    let cp = CheckpointBody::parse(body)?;
    if cp.origin != verifier.name {
        return Err(NoteError::OtherOrigin {
            origin: cp.origin,
            name: verifier.name.clone(),
        });
    }
    Ok(cp)
}
