//! Tampering from the outside: build a real log with the server, change
//! its files as an attacker (or a bad disk) would, and check that
//! `vigil verify` fails with exit 1 naming the place and the fault, that
//! the server refuses to start on damage a crash cannot cause, and that a
//! torn tail (what a crash leaves) is cut on start.
//!
//! File formats used here (see src/log/record.rs and
//! src/store/checkpoints.rs): a segment is a 24-byte header then records
//! `u32 len | u32 crc32 | payload`, payload = `1 | u32 body_len | receipt
//! body JCS | event bytes` for a receipt and `2 | u64 offset | u64 records`
//! for a sync mark; checkpoints.log holds records `u32 len | u32 crc32 |
//! note`. All integers little-endian.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value as J};

use sha2::Digest;

use crate::util::*;

const SEG: &str = "log/00000000000000000000.seg";

/// One framed record in a segment.
#[derive(Debug, Clone)]
struct Rec {
    /// Offset of the record header.
    start: usize,
    /// Offset just past the record.
    end: usize,
    /// The receipt body's bytes.
    body: Range<usize>,
    /// The event's bytes.
    event: Range<usize>,
}

/// Parses every receipt record of a clean segment, skipping sync marks
/// (panics on anything else: the base log is the server's own).
fn records(seg: &[u8]) -> Vec<Rec> {
    assert_eq!(&seg[..8], b"VIGILSEG", "a segment header");
    let mut pos = 24;
    let mut out = Vec::new();
    while pos < seg.len() {
        let len = u32::from_le_bytes(seg[pos..pos + 4].try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(seg[pos + 4..pos + 8].try_into().unwrap());
        let payload = pos + 8;
        let end = payload + len;
        assert!(end <= seg.len(), "a whole record at byte {pos}");
        assert_eq!(
            crc32fast::hash(&seg[payload..end]),
            crc,
            "CRC at byte {pos}"
        );
        if seg[payload] == 2 {
            pos = end; // a sync mark
            continue;
        }
        assert_eq!(seg[payload], 1, "a receipt record at byte {pos}");
        let body_len =
            u32::from_le_bytes(seg[payload + 1..payload + 5].try_into().unwrap()) as usize;
        let body = payload + 5..payload + 5 + body_len;
        out.push(Rec {
            start: pos,
            end,
            event: body.end..end,
            body,
        });
        pos = end;
    }
    out
}

/// Recomputes the CRC-32 of record `r` so that its framing is valid again.
fn fix_crc(seg: &mut [u8], r: &Rec) {
    let crc = crc32fast::hash(&seg[r.start + 8..r.end]);
    seg[r.start + 4..r.start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Replaces record `r` with a well-framed record of `body` and `event`.
fn replace_record(seg: &mut Vec<u8>, r: &Rec, body: &[u8], event: &[u8]) {
    let mut payload = vec![1u8];
    payload.extend_from_slice(&(body.len() as u32).to_le_bytes());
    payload.extend_from_slice(body);
    payload.extend_from_slice(event);
    let mut framed = (payload.len() as u32).to_le_bytes().to_vec();
    framed.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    framed.extend_from_slice(&payload);
    seg.splice(r.start..r.end, framed);
}

/// Cuts checkpoints.log after the checkpoint of size `size`, as if the
/// later ones had never been written.
fn keep_checkpoints_up_to(copy: &Path, size: u64) {
    let path = copy.join("checkpoints.log");
    let mut file = std::fs::read(&path).unwrap();
    let cps = checkpoint_records(&file);
    let k = cps.iter().position(|c| c.size() == size).unwrap();
    file.truncate(cps[k].end);
    std::fs::write(&path, file).unwrap();
}

/// One record of checkpoints.log: its span and its note text.
#[derive(Debug, Clone)]
struct CpRec {
    start: usize,
    end: usize,
    note: String,
}

impl CpRec {
    fn size(&self) -> u64 {
        self.note.lines().nth(1).unwrap().parse().unwrap()
    }
}

fn checkpoint_records(file: &[u8]) -> Vec<CpRec> {
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < file.len() {
        let len = u32::from_le_bytes(file[pos..pos + 4].try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(file[pos + 4..pos + 8].try_into().unwrap());
        let text = &file[pos + 8..pos + 8 + len];
        assert_eq!(crc32fast::hash(text), crc, "checkpoint CRC at byte {pos}");
        out.push(CpRec {
            start: pos,
            end: pos + 8 + len,
            note: String::from_utf8(text.to_vec()).unwrap(),
        });
        pos += 8 + len;
    }
    out
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A log the server wrote: its key events (`first` records), then 20
/// records (15 accepted, 5 rejected) in two batches of 10, a checkpoint of
/// size first + 10 between them, a final one of size first + 20, and that
/// checkpoint as served, saved to a file.
struct Base {
    dir: tempfile::TempDir,
    data: PathBuf,
    jwks: PathBuf,
    trusted: PathBuf,
    signer: Signer,
    /// Records before event t-00: the log's key events (contract 6a).
    first: usize,
}

impl Base {
    fn seg(&self, copy: &Path) -> PathBuf {
        copy.join(SEG)
    }

    fn copy(&self, name: &str) -> PathBuf {
        let to = self.dir.path().join("cases").join(name);
        copy_dir(&self.data, &to);
        to
    }

    fn checkpoints(&self) -> Vec<CpRec> {
        checkpoint_records(&std::fs::read(self.data.join("checkpoints.log")).unwrap())
    }

    /// Ordinal of the first stored checkpoint whose size is more than `n`.
    fn first_covering_more_than(&self, n: u64) -> usize {
        self.checkpoints()
            .iter()
            .position(|c| c.size() > n)
            .expect("a checkpoint covers the records")
    }
}

fn wait_checkpoint(server: &Server, size: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = server.req("GET", "/v1/checkpoint", None, b"");
        assert_eq!(r.status, 200, "GET /v1/checkpoint: {}", r.text());
        let text = r.text();
        let have: u64 = text.lines().nth(1).unwrap().parse().unwrap();
        if have >= size {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "no checkpoint of size {size} within 15 s: {text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Event `t-NN`, signed, or spoiled as `kind` says.
fn make_event(signer: &Signer, n: usize, kind: &str) -> Vec<u8> {
    let id = format!("t-{n:02}");
    match kind {
        "bad_signature" => {
            let mut e: J =
                serde_json::from_slice(&signer.sign(&signer.event(&id, json!({})))).unwrap();
            e["action"] = json!("db.drop_table");
            serde_json::to_vec(&e).unwrap()
        }
        "unknown_key" => {
            let other = Signer::new(77, &signer.agent, "tamper-agent#unknown");
            other.sign(&other.event(&id, json!({})))
        }
        "schema" => {
            let mut e = signer.event(&id, json!({}));
            e.as_object_mut().unwrap().remove("action");
            signer.sign(&e)
        }
        _ => signer.sign(&signer.event(&id, json!({"resource": format!("db://t/{n}")}))),
    }
}

/// Starts a server without detection: these tests make and read logs
/// record by record, and anomaly events would move the records.
fn start_quiet(data: &Path, jwks: &Path) -> Server {
    let cfg = data.with_extension("toml");
    std::fs::write(&cfg, "[detection]\nenabled = false\n").unwrap();
    Server::start_configured(data, jwks, &cfg)
}

fn build_base() -> Base {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("base");
    let signer = Signer::new(52, "tamper-agent", "tamper-agent#1");
    let jwks = dir.path().join("keys.jwks.json");
    write_jwks(&jwks, &[signer.jwk(json!({"status": "active"}))]);
    let mut server = start_quiet(&data, &jwks);
    let first = server.log_size() as usize;
    let spoiled = |n: usize| match n {
        3 | 15 | 19 => "bad_signature",
        7 => "unknown_key",
        12 => "schema",
        _ => "good",
    };
    for batch in [0..10, 10..20] {
        let lines: Vec<Vec<u8>> = batch
            .clone()
            .map(|n| make_event(&signer, n, spoiled(n)))
            .collect();
        let answer = server.post_ndjson(&lines);
        for (n, r) in batch.clone().zip(answer["results"].as_array().unwrap()) {
            let kind = spoiled(n);
            assert_eq!(r["receipt"]["index"], json!(first + n), "{r}");
            if kind == "good" {
                assert_eq!(r["status"], "accepted", "{r}");
            } else {
                assert_eq!(r["status"], "rejected", "{r}");
                assert_eq!(r["reason"], kind, "{r}");
            }
        }
        wait_checkpoint(&server, (first + batch.end) as u64);
    }
    let trusted = dir.path().join("trusted-20.checkpoint");
    std::fs::write(&trusted, wait_checkpoint(&server, first as u64 + 20)).unwrap();
    assert_eq!(server.stop(), Some(0), "{}", server.log_text());
    let base = Base {
        dir,
        data,
        jwks,
        trusted,
        signer,
        first,
    };
    let seg = std::fs::read(base.seg(&base.data)).unwrap();
    assert_eq!(
        records(&seg).len(),
        first + 20,
        "one segment holds the records"
    );
    let sizes: Vec<u64> = base.checkpoints().iter().map(CpRec::size).collect();
    let (ten, twenty) = (first as u64 + 10, first as u64 + 20);
    assert!(
        sizes.first() == Some(&0) && sizes.contains(&ten) && sizes.last() == Some(&twenty),
        "checkpoints of sizes 0, {ten} and {twenty} were stored: {sizes:?}"
    );
    base
}

/// What a tampering is expected to produce: every group must have one of
/// its strings in verify's stderr.
type Needles = Vec<Vec<String>>;

fn one(s: impl Into<String>) -> Vec<String> {
    vec![s.into()]
}

/// A tampering: its name, what it does to a copy, what verify must say,
/// and whether the server must refuse to start on it.
struct Case {
    name: &'static str,
    apply: fn(&Base, &Path) -> Needles,
    serve_refuses: bool,
}

fn edit_seg(base: &Base, copy: &Path, f: impl FnOnce(&mut Vec<u8>, &[Rec])) {
    let path = base.seg(copy);
    let mut seg = std::fs::read(&path).unwrap();
    let recs = records(&seg);
    f(&mut seg, &recs);
    std::fs::write(&path, seg).unwrap();
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("{:?} in the record", String::from_utf8_lossy(needle)))
}

/// The place of event t-`n` in the log.
fn at(base: &Base, n: usize) -> usize {
    base.first + n
}

fn index(base: &Base, n: usize) -> String {
    format!("index {}", at(base, n))
}

/// (a) one byte inside t-05's event bytes, CRC left as it was.
fn event_byte_no_crc(base: &Base, copy: &Path) -> Needles {
    edit_seg(base, copy, |seg, recs| {
        let r = &recs[at(base, 5)];
        let at = r.event.start + find(&seg[r.event.clone()], b"db.query") + 3;
        seg[at] = b'Q';
    });
    vec![one(SEG), one(index(base, 5)), one("CRC")]
}

/// (b) one byte of t-05's receipt body (its received_at), CRC fixed:
/// the chain through `prev` no longer holds at the next record.
fn body_byte_crc_fixed(base: &Base, copy: &Path) -> Needles {
    edit_seg(base, copy, |seg, recs| {
        let r = &recs[at(base, 5)];
        let at = r.body.start + find(&seg[r.body.clone()], b"Z\",\"spec\"") - 1;
        seg[at] = if seg[at] == b'7' { b'8' } else { b'7' };
        fix_crc(seg, r);
    });
    vec![
        one(SEG),
        vec![index(base, 5), index(base, 6)],
        vec!["prev".into(), "chain".into(), "differs from the log".into()],
    ]
}

/// (b') the same in the last record: only the checkpoint's root (and the
/// tiles) show it.
fn last_body_byte_crc_fixed(base: &Base, copy: &Path) -> Needles {
    edit_seg(base, copy, |seg, recs| {
        let r = &recs[at(base, 19)];
        let at = r.body.start + find(&seg[r.body.clone()], b"Z\",\"spec\"") - 1;
        seg[at] = if seg[at] == b'7' { b'8' } else { b'7' };
        fix_crc(seg, r);
    });
    let k = base.first_covering_more_than(at(base, 19) as u64);
    vec![vec![
        format!("checkpoints.log, checkpoint {k}: its root does not match"),
        "differs from the log".into(),
    ]]
}

/// (c) one byte of t-08's event bytes, CRC fixed.
fn event_byte_crc_fixed(base: &Base, copy: &Path) -> Needles {
    edit_seg(base, copy, |seg, recs| {
        let r = &recs[at(base, 8)];
        let at = r.event.start + find(&seg[r.event.clone()], b"db.query") + 7;
        seg[at] = b'z';
        fix_crc(seg, r);
    });
    vec![one(SEG), one(index(base, 8)), one("event_hash")]
}

/// (d) t-10 removed from the middle.
fn delete_record(base: &Base, copy: &Path) -> Needles {
    edit_seg(base, copy, |seg, recs| {
        seg.drain(recs[at(base, 10)].start..recs[at(base, 10)].end);
    });
    vec![
        one(SEG),
        one(index(base, 10)),
        one(format!("says index {}", at(base, 11))),
    ]
}

/// (e) t-13 and t-14 swapped.
fn swap_records(base: &Base, copy: &Path) -> Needles {
    edit_seg(base, copy, |seg, recs| {
        let (a, b) = (&recs[at(base, 13)], &recs[at(base, 14)]);
        let mut swapped = seg[b.start..b.end].to_vec();
        swapped.extend_from_slice(&seg[a.start..a.end]);
        seg.splice(a.start..b.end, swapped);
    });
    vec![
        one(SEG),
        one(index(base, 13)),
        one(format!("says index {}", at(base, 14))),
    ]
}

/// (f) the log cut before t-12, at a record boundary.
fn truncate_below_checkpoint(base: &Base, copy: &Path) -> Needles {
    edit_seg(base, copy, |seg, recs| {
        seg.truncate(recs[at(base, 12)].start)
    });
    let k = base.first_covering_more_than(at(base, 12) as u64);
    vec![
        one(format!("checkpoints.log, checkpoint {k}")),
        one(format!("covers {} records", at(base, 20))),
        one(format!("holds only {}", at(base, 12))),
    ]
}

/// (f') the last record cut in half although a checkpoint covers it.
fn tear_covered_record(base: &Base, copy: &Path) -> Needles {
    edit_seg(base, copy, |seg, recs| {
        let r = &recs[at(base, 19)];
        seg.truncate(r.start + (r.end - r.start) / 2)
    });
    let k = base.first_covering_more_than(at(base, 19) as u64);
    vec![
        one(format!("checkpoints.log, checkpoint {k}")),
        one(format!("covers {} records", at(base, 20))),
    ]
}

/// (g) one character of the checkpoint of t-09's size changed in its
/// signature, its record's CRC fixed.
fn checkpoint_signature(base: &Base, copy: &Path) -> Needles {
    let path = copy.join("checkpoints.log");
    let mut file = std::fs::read(&path).unwrap();
    let cps = checkpoint_records(&file);
    let k = cps
        .iter()
        .position(|c| c.size() == at(base, 10) as u64)
        .unwrap();
    let cp = &cps[k];
    let text_start = cp.start + 8;
    // The signature line is the last line: "— <origin> <base64 blob>".
    let blob_start = cp.note.trim_end().rfind(' ').unwrap() + 1;
    let at = text_start + blob_start + 40;
    file[at] = if file[at] == b'A' { b'B' } else { b'A' };
    let crc = crc32fast::hash(&file[text_start..cp.end]);
    file[cp.start + 4..cp.start + 8].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&path, file).unwrap();
    vec![
        one(format!("checkpoints.log, checkpoint {k}")),
        one("signature"),
    ]
}

/// (h) the log and checkpoints.log cut back to the checkpoint before
/// t-10: consistent in itself, so only a checkpoint the auditor kept
/// shows it.
fn truncate_log_and_checkpoints(base: &Base, copy: &Path) -> Needles {
    edit_seg(base, copy, |seg, recs| {
        seg.truncate(recs[at(base, 10)].start)
    });
    keep_checkpoints_up_to(copy, at(base, 10) as u64);
    vec![
        one("trusted checkpoint"),
        one(format!("covers {} records", at(base, 20))),
    ]
}

/// (i) past the last stored checkpoint, the last record's verdict turned
/// from rejected:bad_signature into accepted (framing and chain intact):
/// only re-checking the event's signature shows it.
fn forged_acceptance(base: &Base, copy: &Path) -> Needles {
    keep_checkpoints_up_to(copy, at(base, 10) as u64);
    edit_seg(base, copy, |seg, recs| {
        let r = &recs[at(base, 19)];
        let body = String::from_utf8(seg[r.body.clone()].to_vec()).unwrap();
        let forged = body.replace(
            "\"verdict\":\"rejected:bad_signature\"",
            "\"verdict\":\"accepted\"",
        );
        assert_ne!(body, forged, "t-19 is a bad_signature rejection");
        let event = seg[r.event.clone()].to_vec();
        replace_record(seg, r, forged.as_bytes(), &event);
    });
    vec![one(SEG), one(index(base, 19)), one("signature")]
}

/// (j) past the last stored checkpoint, the last record replaced by a
/// second acceptance of event t-18 (framing and chain intact).
fn accepted_twice(base: &Base, copy: &Path) -> Needles {
    keep_checkpoints_up_to(copy, at(base, 10) as u64);
    edit_seg(base, copy, |seg, recs| {
        let (r18, r19) = (&recs[at(base, 18)], &recs[at(base, 19)]);
        let body18: J = serde_json::from_slice(&seg[r18.body.clone()]).unwrap();
        let body19: J = serde_json::from_slice(&seg[r19.body.clone()]).unwrap();
        // The JCS body as the server writes it (keys sorted, no spaces),
        // at t-19's index and chained to t-18.
        let mut forged = body18.clone();
        forged["index"] = body19["index"].clone();
        forged["prev"] = body19["prev"].clone();
        let forged = serde_json::to_vec(&forged).unwrap();
        let event = seg[r18.event.clone()].to_vec();
        replace_record(seg, r19, &forged, &event);
    });
    vec![
        one(SEG),
        one(index(base, 19)),
        one("accepted a second time"),
    ]
}

/// (k) issue 7, finding 8: after the last checkpoint, a bad CRC on the
/// last record, which a sync mark follows (it was acknowledged): damage,
/// not a torn write to cut.
fn acknowledged_tail_crc(base: &Base, copy: &Path) -> Needles {
    keep_checkpoints_up_to(copy, at(base, 10) as u64);
    edit_seg(base, copy, |seg, recs| {
        let r = &recs[at(base, 19)];
        seg[r.end - 3] ^= 0x20;
    });
    vec![one(SEG), one(index(base, 19)), one("CRC")]
}

/// (l) issue 7, finding 8: after the last checkpoint, an inflated length
/// field in a record (so that it seems to run past the end of the file).
fn inflated_length(base: &Base, copy: &Path) -> Needles {
    keep_checkpoints_up_to(copy, at(base, 10) as u64);
    edit_seg(base, copy, |seg, recs| {
        let r = &recs[at(base, 15)];
        seg[r.start..r.start + 4].copy_from_slice(&0x00ff_ffffu32.to_le_bytes());
    });
    vec![one(SEG), one(index(base, 15))]
}

/// (m) issue 8: one hash in the latest level-0 tile changed.
fn edited_tile(base: &Base, copy: &Path) -> Needles {
    let width = at(base, 20);
    let path = copy.join(format!("tlog/tile/0/000.p/{width}"));
    let mut tile = std::fs::read(&path).unwrap();
    tile[32 * 7 + 5] ^= 1;
    std::fs::write(&path, tile).unwrap();
    vec![one(format!("tlog/tile/0/000.p/{width}")), one("position 7")]
}

/// (n) issue 8: an entry of the duplicate index made to name another record.
fn edited_index(base: &Base, copy: &Path) -> Needles {
    // The entry of the first accepted event: its value (the record index)
    // is changed, so that a re-sent copy of that event meets it.
    let key = vigil::store::dedupe::Key::accepted(&base.signer.agent, "t-00");
    let mut edited = 0;
    for run in std::fs::read_dir(copy.join("index")).unwrap() {
        let run = run.unwrap().path();
        let name = run.file_name().unwrap().to_str().unwrap().to_string();
        if !(name.starts_with("run-") && name.ends_with(".bin")) {
            continue;
        }
        let mut bytes = std::fs::read(&run).unwrap();
        // 24-byte entries (16-byte key, 8-byte index) after a 40-byte header.
        for at in (40..bytes.len()).step_by(24) {
            if bytes[at..at + 16] == key.0 {
                bytes[at + 16] ^= 1;
                edited += 1;
            }
        }
        std::fs::write(&run, bytes).unwrap();
    }
    assert_eq!(edited, 1, "the index holds the entry of t-00 once");
    vec![one("duplicate index")]
}

/// (o) issue 7, finding 2: a key the log never recorded, written into the
/// directory's old key snapshot and the server's copy of the key history,
/// and the last record replaced by an event it signs, accepted.
fn unlogged_key(base: &Base, copy: &Path) -> Needles {
    keep_checkpoints_up_to(copy, at(base, 10) as u64);
    let intruder = Signer::new(66, &base.signer.agent, "tamper-agent#intruder");
    let jwk = intruder.jwk(json!({}));
    std::fs::create_dir_all(copy.join("keys")).unwrap();
    std::fs::write(copy.join("keys/snapshot.jsonl"), format!("{jwk}\n")).unwrap();
    let keys_json = copy.join("index/keys.json");
    let mut history: J = serde_json::from_slice(&std::fs::read(&keys_json).unwrap()).unwrap();
    history["keys"].as_array_mut().unwrap().push(jwk);
    std::fs::write(&keys_json, serde_json::to_vec(&history).unwrap()).unwrap();
    edit_seg(base, copy, |seg, recs| {
        let r19 = &recs[at(base, 19)];
        let mut body: J = serde_json::from_slice(&seg[r19.body.clone()]).unwrap();
        let event = intruder.sign(&intruder.event("t-forged", json!({})));
        let whole: J = serde_json::from_slice(&event).unwrap();
        body["verdict"] = json!("accepted");
        body["event_id"] = json!("t-forged");
        body["key_id"] = json!("tamper-agent#intruder");
        body["correlation_id"] = whole["correlation_id"].clone();
        let mut canonical = Vec::new();
        vigil::json::write_jcs(&vigil::json::parse(&event).unwrap(), &mut canonical);
        body["event_hash"] = json!(hex::encode(sha2::Sha256::digest(&canonical)));
        let forged = serde_json::to_vec(&body).unwrap();
        replace_record(seg, r19, &forged, &event);
    });
    vec![one(SEG), one(index(base, 19)), one("tamper-agent#intruder")]
}

fn cases() -> Vec<Case> {
    let case = |name, apply, serve_refuses| Case {
        name,
        apply,
        serve_refuses,
    };
    vec![
        case(
            "a-event-byte-no-crc",
            event_byte_no_crc as fn(&Base, &Path) -> Needles,
            true,
        ),
        case("b-body-byte-crc-fixed", body_byte_crc_fixed, true),
        case("b-last-body-byte-crc-fixed", last_body_byte_crc_fixed, true),
        // Start-up checks framing, indices, the chain and the leaf hashes
        // of the last segment; stored event bytes are `vigil verify`'s.
        case("c-event-byte-crc-fixed", event_byte_crc_fixed, false),
        case("d-delete-record", delete_record, true),
        case("e-swap-records", swap_records, true),
        case(
            "f-truncate-below-checkpoint",
            truncate_below_checkpoint,
            true,
        ),
        case("f-tear-covered-record", tear_covered_record, true),
        case("g-checkpoint-signature", checkpoint_signature, false),
        case(
            "h-truncate-log-and-checkpoints",
            truncate_log_and_checkpoints,
            false,
        ),
        case("i-forged-acceptance", forged_acceptance, false),
        case("j-accepted-twice", accepted_twice, false),
        case("k-acknowledged-tail-crc", acknowledged_tail_crc, true),
        case("l-inflated-length", inflated_length, true),
        // The server rebuilds a tile that disagrees with its checkpoint.
        case("m-edited-tile", edited_tile, false),
        case("n-edited-index", edited_index, false),
        case("o-unlogged-key", unlogged_key, false),
    ]
}

fn verify(copy: &Path, extra: &[&str]) -> (Option<i32>, String) {
    let mut args = vec!["verify", "--data", copy.to_str().unwrap(), "--quiet"];
    args.extend_from_slice(extra);
    let out = run_vigil(&args);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn verify_fails_on_every_tampering_and_names_the_place() {
    let base = build_base();
    let (code, err) = verify(&base.data, &[]);
    assert_eq!(code, Some(0), "the untampered log verifies: {err}");
    let (code, err) = verify(
        &base.data,
        &["--checkpoint", base.trusted.to_str().unwrap()],
    );
    assert_eq!(
        code,
        Some(0),
        "the untampered log verifies against its checkpoint: {err}"
    );

    let mut failures = Vec::new();
    for case in cases() {
        let copy = base.copy(case.name);
        let needles = (case.apply)(&base, &copy);
        let trusted = base.trusted.to_str().unwrap();
        let extra: &[&str] = if case.name.starts_with("h-") {
            // Consistent in itself: without the trusted checkpoint nobody
            // can tell (contract section 8).
            let (code, err) = verify(&copy, &[]);
            if code != Some(0) {
                failures.push(format!(
                    "{}: without --checkpoint, verify gave {code:?} on a self-consistent shorter log: {err}",
                    case.name
                ));
            }
            &["--checkpoint", trusted]
        } else {
            &[]
        };
        let (code, err) = verify(&copy, extra);
        eprintln!("{}: exit {code:?}: {}", case.name, err.trim_end());
        if code != Some(1) {
            failures.push(format!(
                "{}: verify exited {code:?}, not 1: {err}",
                case.name
            ));
            continue;
        }
        for group in &needles {
            if !group.iter().any(|n| err.contains(n.as_str())) {
                failures.push(format!(
                    "{}: verify's message does not name {group:?}: {err}",
                    case.name
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Runs `vigil serve` on `data`; returns its exit code and stderr if it
/// exits within 30 s, else kills it and returns None (it started).
fn serve_exits(data: &Path, jwks: &Path) -> Option<(Option<i32>, String)> {
    let err_path = data.with_extension("stderr");
    let err_file = std::fs::File::create(&err_path).unwrap();
    let mut child = vigil()
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .arg("--keys")
        .arg(jwks)
        .stdout(Stdio::null())
        .stderr(err_file)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some((
                status.code(),
                std::fs::read_to_string(&err_path).unwrap_or_default(),
            ));
        }
        if Instant::now() > deadline || data.join("listen.addr").exists() {
            child.kill().unwrap();
            child.wait().unwrap();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn serve_refuses_damage_in_the_middle_and_cuts_a_torn_tail() {
    let base = build_base();
    let mut failures = Vec::new();
    for case in cases().into_iter().filter(|c| c.serve_refuses) {
        let copy = base.copy(case.name);
        (case.apply)(&base, &copy);
        // listen.addr is the server's own sign of having started.
        let _ = std::fs::remove_file(copy.join("listen.addr"));
        match serve_exits(&copy, &base.jwks) {
            None => failures.push(format!("{}: vigil serve started on it", case.name)),
            Some((code, err)) => {
                eprintln!("serve on {}: exit {code:?}: {}", case.name, err.trim_end());
                if code != Some(2) || !err.contains("vigil verify") {
                    failures.push(format!(
                        "{}: vigil serve exited {code:?} (want 2, telling to run vigil verify): {err}",
                        case.name
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Torn tails past the last checkpoint, as a crash leaves them: half of
    // a record; zeros where the file grew but nothing was written; and a
    // last group whose middle page never reached the disk (zeros) while a
    // later page did (issue 7, finding 8: a crash artefact, not damage).
    let seg = std::fs::read(base.seg(&base.data)).unwrap();
    let last = records(&seg)[base.first + 19].clone();
    let whole = seg[last.start..last.end].to_vec();
    let half = whole[..whole.len() / 2].to_vec();
    let mut holed = whole.clone();
    holed.extend_from_slice(&whole);
    holed[20..whole.len() + 10].fill(0);
    for (name, tail) in [
        ("torn-half-record", half),
        ("torn-zeros", vec![0u8; 100]),
        ("torn-zero-page-in-the-last-group", holed),
    ] {
        let copy = base.copy(name);
        let path = base.seg(&copy);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&tail);
        std::fs::write(&path, &bytes).unwrap();
        let (code, err) = verify(&copy, &[]);
        assert_eq!(
            code,
            Some(0),
            "{name}: a torn unacknowledged tail is not tampering: {err}"
        );
        assert!(
            err.contains(SEG),
            "{name}: verify notes the torn tail: {err}"
        );

        let mut server = start_quiet(&copy, &base.jwks);
        // The tail is cut; an idle writer may already have appended one
        // sync mark after the last record, and nothing else.
        let now = std::fs::read(&path).unwrap();
        assert_eq!(
            &now[..seg.len().min(now.len())],
            &seg[..],
            "{name}: the torn tail is cut on start"
        );
        let extra = now.len() - seg.len();
        assert!(
            extra == 0 || extra == vigil::log::record::MARK_LEN,
            "{name}: only a sync mark may follow the cut ({extra} bytes)"
        );
        let r = server.receipt(&base.signer.agent, "t-19");
        assert_eq!(r.status, 200, "{name}: {}", r.text());
        assert_eq!(r.json()["receipt"]["index"], base.first + 19);
        let answer = server.post_ndjson(&[make_event(&base.signer, 20, "good")]);
        assert_eq!(answer["results"][0]["status"], "accepted", "{answer}");
        assert_eq!(
            answer["results"][0]["receipt"]["index"],
            base.first + 20,
            "{answer}"
        );
        assert_eq!(server.stop(), Some(0), "{}", server.log_text());
        let (code, err) = verify(&copy, &[]);
        assert_eq!(code, Some(0), "{name}: after the restart: {err}");
        assert_eq!(
            records(&std::fs::read(&path).unwrap()).len(),
            base.first + 21,
            "{name}: whole records only"
        );
    }
}

/// Issue 8: a tile that disagrees with its checkpoint is rebuilt from the
/// records at start (never trusted over them), and a damaged duplicate
/// index is found on use: the server stops taking events rather than
/// guessing, and its next start rebuilds the index from the log.
#[test]
fn damaged_tiles_and_index_are_rebuilt_from_the_records() {
    let base = build_base();
    let copy = base.copy("rebuild-tile");
    edited_tile(&base, &copy);
    let mut server = start_quiet(&copy, &base.jwks);
    assert!(
        server.log_text().contains("rebuilding them from the log"),
        "{}",
        server.log_text()
    );
    assert_eq!(server.stop(), Some(0), "{}", server.log_text());
    let (code, err) = verify(&copy, &[]);
    assert_eq!(code, Some(0), "the rebuilt tiles verify: {err}");

    let copy = base.copy("rebuild-index");
    edited_index(&base, &copy);
    let (code, err) = verify(&copy, &[]);
    assert_eq!(code, Some(1), "{err}");
    let mut server = start_quiet(&copy, &base.jwks);
    // Every event sent again, byte for byte: one of them meets the
    // damaged entry.
    let seg = std::fs::read(base.seg(&base.data)).unwrap();
    let lines: Vec<Vec<u8>> = records(&seg)[base.first..]
        .iter()
        .map(|r| seg[r.event.clone()].to_vec())
        .collect();
    let r = server.req(
        "POST",
        "/v1/events",
        Some("application/x-ndjson"),
        &lines.join(&b'\n'),
    );
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("duplicate index"), "{}", r.text());
    let started = Instant::now();
    while server.child.as_mut().unwrap().try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the server did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server.child = None;
    let mut server = start_quiet(&copy, &base.jwks);
    let answer = server.post_ndjson(&lines);
    assert_eq!(answer["duplicates"], 15, "{answer}");
    assert_eq!(answer["rejected"], 5, "{answer}");
    assert_eq!(
        server.log_size(),
        (base.first + 20) as u64,
        "no new receipt"
    );
    assert_eq!(server.stop(), Some(0));
    let (code, err) = verify(&copy, &[]);
    assert_eq!(code, Some(0), "after the rebuild: {err}");
}

/// Issue 7, finding 2: what verify trusts. Without a trusted checkpoint or
/// a pinned log key it says it checked internal consistency only; a
/// missing or altered origin or log-keys.txt is an invalid log (exit 1),
/// not a usage error; --vkey may be given more than once (a rotated log
/// key).
#[test]
fn verify_says_what_it_trusted() {
    let base = build_base();
    let data = base.data.to_str().unwrap();
    let out = run_vigil(&["verify", "--data", data, "--quiet"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout.contains("internal consistency only"), "{stdout}");
    let vkey = std::fs::read_to_string(base.data.join("log-keys.txt")).unwrap();
    let vkey = vkey.lines().next().unwrap();
    let origin = vkey.split('+').next().unwrap();
    let other =
        vigil::log::note::NoteSigner::new(origin, ed25519_dalek::SigningKey::from_bytes(&[5; 32]))
            .verifier_key();
    let out = run_vigil(&[
        "verify", "--data", data, "--quiet", "--vkey", &other, "--vkey", vkey,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!stdout.contains("internal consistency only"), "{stdout}");
    let out = run_vigil(&["verify", "--data", data, "--quiet", "--vkey", &other]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "another log key: the checkpoints do not verify"
    );

    for (name, change) in [
        ("no-origin", "rm origin"),
        ("other-origin", "origin"),
        ("no-log-keys", "rm log-keys.txt"),
        ("other-log-keys", "log-keys.txt"),
    ] {
        let copy = base.copy(name);
        match change.strip_prefix("rm ") {
            Some(file) => std::fs::remove_file(copy.join(file)).unwrap(),
            None if change == "origin" => {
                std::fs::write(copy.join("origin"), "vigil.local/someone-else\n").unwrap()
            }
            None => std::fs::write(copy.join("log-keys.txt"), format!("{other}\n")).unwrap(),
        }
        let (code, err) = verify(&copy, &[]);
        assert_eq!(code, Some(1), "{name}: {err}");
    }
}
