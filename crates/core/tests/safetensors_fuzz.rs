//! Robustness of the safetensors reader: 10,000 files with mutated headers never panic, and each
//! kind of damage is reported in words that say what is wrong.

use candle_core::Device;
use interplab_core::safetensors_file::SafetensorsFile;
use interplab_core::Error;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::RngSeed;
use serde_json::{json, Map, Value};

/// A valid file's parts: the JSON header (as a value, so mutations can aim at its fields) and
/// the data section.
#[derive(Clone)]
struct Parts {
    header: Map<String, Value>,
    data: Vec<u8>,
}

impl Parts {
    fn to_bytes(&self) -> Vec<u8> {
        let text = serde_json::to_string(&self.header).unwrap_or_default();
        let mut out = (text.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(text.as_bytes());
        out.extend_from_slice(&self.data);
        out
    }
}

/// Tensors of several dtypes packed back to back, as the reference writer does.
fn sample() -> Parts {
    let specs: &[(&str, &str, &[usize], usize)] = &[
        ("embed.weight", "F32", &[4, 3], 4),
        ("ln.weight", "F16", &[3], 2),
        ("ln.bias", "BF16", &[3], 2),
        ("head.weight", "F64", &[2, 2], 8),
        ("scalar", "F32", &[], 4),
        ("empty", "F32", &[0, 5], 4),
        ("ids", "I64", &[2], 8),
        ("mask", "BOOL", &[3], 1),
        ("fp4", "F4", &[4], 1),
    ];
    let mut header = Map::new();
    let mut data = Vec::new();
    for (i, &(name, dtype, shape, elem_bytes)) in specs.iter().enumerate() {
        let count: usize = shape.iter().product();
        let n = if dtype == "F4" {
            count / 2
        } else {
            count * elem_bytes
        };
        let start = data.len();
        data.extend((0..n).map(|j| (i * 31 + j * 7) as u8));
        header.insert(
            name.to_string(),
            json!({"dtype": dtype, "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    header.insert("__metadata__".into(), json!({"format": "pt"}));
    Parts { header, data }
}

const NASTY: &[u64] = &[
    0,
    1,
    2,
    3,
    7,
    8,
    12,
    48,
    100,
    255,
    0xFFFF_FFFF,
    1 << 32,
    1 << 40,
    (1 << 61) - 1,
    1 << 61,
    i64::MAX as u64,
    u64::MAX - 1,
    u64::MAX,
];

#[derive(Debug, Clone)]
enum Field {
    Start,
    End,
    Dim(Index),
    AddDim,
    RemoveDim,
}

#[derive(Debug, Clone)]
enum Mutation {
    /// Set a shape dim or a data offset of one tensor to a number.
    Number(Index, Field, u64),
    /// Replace a field of one tensor with a value of the wrong kind.
    WrongKind(Index, u8, u8),
    /// Give one tensor another dtype name.
    Dtype(Index, Index),
    /// Byte-level damage to the serialised file.
    FlipBit(Index, u8),
    Truncate(Index),
    /// Overwrite the header length prefix.
    HeaderLen(u64),
    /// Copy a run of bytes from one place over another.
    Splice(Index, Index, u8),
    /// Drop or duplicate data bytes.
    DataLen(i8),
}

const DTYPES: &[&str] = &[
    "F32", "F16", "BF16", "F64", "I64", "I32", "I16", "I8", "U8", "U16", "U32", "U64", "BOOL",
    "F4", "F6_E2M3", "F8_E4M3", "C64", "f32", "Q4_0", "", "F128",
];

fn mutation() -> impl Strategy<Value = Mutation> {
    let number = prop_oneof![
        3 => proptest::sample::select(NASTY),
        1 => 0u64..200,
        1 => any::<u64>(),
    ];
    let field = prop_oneof![
        Just(Field::Start),
        Just(Field::End),
        any::<Index>().prop_map(Field::Dim),
        Just(Field::AddDim),
        Just(Field::RemoveDim),
    ];
    prop_oneof![
        6 => (any::<Index>(), field, number).prop_map(|(t, f, v)| Mutation::Number(t, f, v)),
        1 => (any::<Index>(), 0u8..4, 0u8..6).prop_map(|(t, f, k)| Mutation::WrongKind(t, f, k)),
        2 => (any::<Index>(), any::<Index>()).prop_map(|(t, d)| Mutation::Dtype(t, d)),
        2 => (any::<Index>(), 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        1 => prop_oneof![proptest::sample::select(NASTY), 0u64..2000].prop_map(Mutation::HeaderLen),
        1 => (any::<Index>(), any::<Index>(), any::<u8>()).prop_map(|(a, b, n)| Mutation::Splice(a, b, n)),
        1 => any::<i8>().prop_map(Mutation::DataLen),
    ]
}

fn tensor_names(parts: &Parts) -> Vec<String> {
    parts
        .header
        .keys()
        .filter(|k| k.as_str() != "__metadata__")
        .cloned()
        .collect()
}

/// Applies the structured mutations to the header, then the byte-level ones to the file.
fn apply(base: &Parts, mutations: &[Mutation]) -> Vec<u8> {
    let mut parts = base.clone();
    let names = tensor_names(&parts);
    for m in mutations {
        let entry = |t: &Index, parts: &Parts| {
            let name = t.get(&names).clone();
            let obj = parts.header.get(&name).and_then(Value::as_object).cloned();
            obj.map(|obj| (name, obj))
        };
        match m {
            Mutation::Number(t, field, v) => {
                let Some((name, mut obj)) = entry(t, &parts) else {
                    continue;
                };
                match field {
                    Field::Start | Field::End => {
                        let i = usize::from(matches!(field, Field::End));
                        if let Some(o) = obj.get_mut("data_offsets").and_then(Value::as_array_mut) {
                            if i < o.len() {
                                o[i] = json!(v);
                            }
                        }
                    }
                    Field::Dim(d) => {
                        if let Some(s) = obj.get_mut("shape").and_then(Value::as_array_mut) {
                            if !s.is_empty() {
                                let k = d.index(s.len());
                                s[k] = json!(v);
                            }
                        }
                    }
                    Field::AddDim => {
                        if let Some(s) = obj.get_mut("shape").and_then(Value::as_array_mut) {
                            s.push(json!(v));
                        }
                    }
                    Field::RemoveDim => {
                        if let Some(s) = obj.get_mut("shape").and_then(Value::as_array_mut) {
                            s.pop();
                        }
                    }
                }
                parts.header.insert(name, Value::Object(obj));
            }
            Mutation::WrongKind(t, f, k) => {
                let Some((name, mut obj)) = entry(t, &parts) else {
                    continue;
                };
                let key = ["dtype", "shape", "data_offsets", "extra"][*f as usize];
                let value = match k {
                    0 => json!(-1),
                    1 => json!(1.5),
                    2 => json!("x"),
                    3 => json!([1, 2, 3]),
                    4 => json!(null),
                    _ => json!({"a": 1}),
                };
                obj.insert(key.to_string(), value);
                parts.header.insert(name, Value::Object(obj));
            }
            Mutation::Dtype(t, d) => {
                let Some((name, mut obj)) = entry(t, &parts) else {
                    continue;
                };
                obj.insert("dtype".into(), json!(d.get(DTYPES)));
                parts.header.insert(name, Value::Object(obj));
            }
            _ => {}
        }
    }
    let mut bytes = parts.to_bytes();
    for m in mutations {
        if bytes.is_empty() {
            break;
        }
        let len = bytes.len();
        match m {
            Mutation::FlipBit(i, b) => bytes[i.index(len)] ^= 1 << b,
            Mutation::Truncate(i) => bytes.truncate(i.index(len)),
            Mutation::HeaderLen(v) if len >= 8 => bytes[..8].copy_from_slice(&v.to_le_bytes()),
            Mutation::Splice(from, to, n) => {
                let (from, to) = (from.index(len), to.index(len));
                let n = (*n as usize).min(len - from).min(len - to);
                let chunk = bytes[from..from + n].to_vec();
                bytes[to..to + n].copy_from_slice(&chunk);
            }
            Mutation::DataLen(d) => {
                if *d < 0 {
                    bytes.truncate(len.saturating_sub(d.unsigned_abs() as usize));
                } else {
                    bytes.extend(std::iter::repeat_n(0u8, *d as usize));
                }
            }
            _ => {}
        }
    }
    bytes
}

/// How far one mutated file got: refused when opened, opened but no tensor read, or at least
/// one tensor read (dequantised) with the shape its header gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Refused = 0,
    Opened = 1,
    Read = 2,
}

fn exercise(bytes: Vec<u8>) -> std::result::Result<Stage, TestCaseError> {
    let file = match SafetensorsFile::from_bytes(bytes) {
        Ok(f) => f,
        Err(Error::Malformed { .. }) => return Ok(Stage::Refused),
        Err(other) => return Err(TestCaseError::fail(format!("open: unexpected {other:?}"))),
    };
    let mut read = false;
    for name in file.names() {
        let shape = file.shape(name).map(<[usize]>::to_vec);
        match file.tensor_f32(name, &Device::Cpu) {
            Ok(t) => {
                prop_assert_eq!(Some(t.dims().to_vec()), shape);
                read = true;
            }
            Err(Error::Unsupported(_)) => {}
            Err(other) => {
                return Err(TestCaseError::fail(format!(
                    "reading `{name}`: unexpected {other:?}"
                )))
            }
        }
    }
    Ok(if read { Stage::Read } else { Stage::Opened })
}

const SEED: u64 = 0x5afe_7e25;

/// 10,000 cases from a fixed seed, so that CI is reproducible; set `PROPTEST_RNG_SEED` to
/// explore other cases locally.
fn config() -> ProptestConfig {
    let mut config = ProptestConfig {
        cases: 10_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        config.rng_seed = RngSeed::Fixed(SEED);
    }
    config
}

/// 10,000 mutated files: none panics, every error is `Malformed` or `Unsupported`; and enough of
/// them get past the header and into the tensor data that the deeper code is exercised too
/// (a generator whose files were all refused at once would fail here).
#[test]
fn mutated_safetensors_never_panic() {
    let counts = std::cell::RefCell::new([0usize; 3]);
    let mut runner = proptest::test_runner::TestRunner::new(config());
    runner
        .run(&proptest::collection::vec(mutation(), 1..4), |mutations| {
            let stage = exercise(apply(&sample(), &mutations))?;
            counts.borrow_mut()[stage as usize] += 1;
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let [refused, opened, read] = *counts.borrow();
    eprintln!("{refused} refused, {opened} opened with no tensor read, {read} with tensors read");
    // The fixed seed gives 9,506 refused, 0 opened, 494 read; the floor is about half of that, so
    // another seed passes and a generator that stopped reaching the tensor data fails.
    assert!(
        refused > 0,
        "no mutation was refused: the mutations are too weak"
    );
    assert!(
        read >= 250,
        "only {read} of 10,000 cases read a tensor (floor 250)"
    );
}

#[test]
fn base_file_is_valid() {
    let file = SafetensorsFile::from_bytes(sample().to_bytes()).unwrap();
    assert_eq!(file.len(), 9);
    for name in [
        "embed.weight",
        "ln.weight",
        "ln.bias",
        "head.weight",
        "scalar",
        "empty",
    ] {
        let t = file.tensor_f32(name, &Device::Cpu).unwrap();
        assert_eq!(t.dims(), file.shape(name).unwrap());
    }
    assert!(matches!(
        file.tensor_f32("ids", &Device::Cpu),
        Err(Error::Unsupported(_))
    ));
}

fn malformed_reason(bytes: Vec<u8>) -> String {
    match SafetensorsFile::from_bytes(bytes) {
        Err(Error::Malformed { reason, .. }) => reason,
        Err(other) => panic!("expected Malformed, got {other:?}"),
        Ok(_) => panic!("expected an error, the file parsed"),
    }
}

#[test]
fn truncated() {
    let bytes = sample().to_bytes();
    let reason = malformed_reason(bytes[..5].to_vec());
    assert!(reason.contains("truncated"), "{reason}");
    let reason = malformed_reason(bytes[..bytes.len() - 3].to_vec());
    assert!(reason.contains("out of range"), "{reason}");
}

#[test]
fn header_length_past_end_of_file() {
    let mut bytes = sample().to_bytes();
    bytes[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let reason = malformed_reason(bytes);
    assert!(
        reason.contains("header length 1099511627776 runs past the end of the file"),
        "{reason}"
    );
}

#[test]
fn offsets_out_of_range() {
    let mut parts = sample();
    parts.header.insert(
        "embed.weight".into(),
        json!({"dtype": "F32", "shape": [4, 3], "data_offsets": [1000, 1048]}),
    );
    let reason = malformed_reason(parts.to_bytes());
    assert!(
        reason.contains("tensor `embed.weight` data_offsets [1000, 1048] are out of range"),
        "{reason}"
    );
    let mut parts = sample();
    parts.header.insert(
        "embed.weight".into(),
        json!({"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 48]}),
    );
    let reason = malformed_reason(parts.to_bytes());
    assert!(reason.contains("needs 64"), "{reason}");
}

#[test]
fn unknown_dtype() {
    let mut parts = sample();
    parts.header.insert(
        "embed.weight".into(),
        json!({"dtype": "F128", "shape": [4, 3], "data_offsets": [0, 48]}),
    );
    let reason = malformed_reason(parts.to_bytes());
    assert!(
        reason.contains("tensor `embed.weight` has unknown dtype `F128`"),
        "{reason}"
    );
}

#[test]
fn not_json() {
    let mut bytes = sample().to_bytes();
    bytes[8] = b'[';
    let reason = malformed_reason(bytes);
    assert!(reason.contains("header is not a JSON object"), "{reason}");
}
