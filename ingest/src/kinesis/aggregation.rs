//! KPL record aggregation: many small user records in one Kinesis record, in the format of the
//! Kinesis Producer Library, so that our aggregates read with the KCL and the KPL's read here.
//!
//! A Kinesis record's data is `F3 89 9A C2` (magic) ‖ protobuf `AggregatedRecord` ‖ MD5 of the
//! protobuf bytes:
//!
//! ```text
//! message AggregatedRecord {
//!   repeated string partition_key_table     = 1;
//!   repeated string explicit_hash_key_table = 2;
//!   repeated Record records                 = 3;
//! }
//! message Record {
//!   required uint64 partition_key_index     = 1;
//!   optional uint64 explicit_hash_key_index = 2;
//!   required bytes  data                    = 3;
//!   repeated Tag    tags                    = 4;
//! }
//! message Tag { required string key = 1; optional string value = 2; }
//! ```
//!
//! Data that does not start with the magic, whose checksum does not match or whose protobuf does
//! not parse is an ordinary record, as the KCL treats it: a producer that never aggregates can put
//! any bytes.

use bytes::Bytes;
use md5::{Digest, Md5};
use prost::Message;

/// The first four bytes of an aggregated record.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];
const DIGEST_LEN: usize = 16;

#[derive(Clone, PartialEq, prost::Message)]
struct AggregatedRecord {
    #[prost(string, repeated, tag = "1")]
    partition_key_table: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    explicit_hash_key_table: Vec<String>,
    #[prost(message, repeated, tag = "3")]
    records: Vec<SubRecord>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SubRecord {
    #[prost(uint64, required, tag = "1")]
    partition_key_index: u64,
    #[prost(uint64, optional, tag = "2")]
    explicit_hash_key_index: Option<u64>,
    #[prost(bytes = "bytes", required, tag = "3")]
    data: Bytes,
    #[prost(message, repeated, tag = "4")]
    tags: Vec<Tag>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Tag {
    #[prost(string, required, tag = "1")]
    key: String,
    #[prost(string, optional, tag = "2")]
    value: Option<String>,
}

/// One user record inside an aggregate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRecord {
    pub partition_key: String,
    pub data: Bytes,
}

/// Builds one aggregate, tracking its encoded size so that callers can stop before a limit.
#[derive(Debug, Default)]
pub struct Aggregator {
    record: AggregatedRecord,
    /// Encoded size of the protobuf message so far.
    proto_len: usize,
}

/// Bytes a length-delimited protobuf field takes: tag, length varint, payload.
fn field_len(tag_len: usize, payload: usize) -> usize {
    tag_len + prost::encoding::encoded_len_varint(payload as u64) + payload
}

impl Aggregator {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.record.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.record.records.is_empty()
    }

    /// The size of the Kinesis record's data if `key`/`data` were added now.
    pub fn size_with(&self, key: &str, data: &[u8]) -> usize {
        let (key_index, new_key) = self.key_index(key);
        let mut grow = 0;
        if new_key {
            grow += field_len(1, key.len());
        }
        let sub =
            field_len(1, data.len()) + 1 + prost::encoding::encoded_len_varint(key_index as u64);
        grow += field_len(1, sub);
        MAGIC.len() + self.proto_len + grow + DIGEST_LEN
    }

    /// The size of the Kinesis record's data as it stands.
    pub fn size(&self) -> usize {
        MAGIC.len() + self.proto_len + DIGEST_LEN
    }

    fn key_index(&self, key: &str) -> (usize, bool) {
        // Aggregates hold at most a few thousand records and keys repeat in runs (one session's
        // events), so the last keys are checked first.
        match self
            .record
            .partition_key_table
            .iter()
            .rposition(|k| k == key)
        {
            Some(i) => (i, false),
            None => (self.record.partition_key_table.len(), true),
        }
    }

    pub fn add(&mut self, key: &str, data: Bytes) {
        let (index, new_key) = self.key_index(key);
        if new_key {
            self.record.partition_key_table.push(key.to_owned());
        }
        self.record.records.push(SubRecord {
            partition_key_index: index as u64,
            explicit_hash_key_index: None,
            data,
            tags: Vec::new(),
        });
        self.proto_len = self.record.encoded_len();
    }

    /// The Kinesis record's data: magic ‖ protobuf ‖ MD5(protobuf).
    pub fn finish(self) -> Bytes {
        let proto = self.record.encode_to_vec();
        let mut out = Vec::with_capacity(MAGIC.len() + proto.len() + DIGEST_LEN);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&proto);
        out.extend_from_slice(&Md5::digest(&proto));
        Bytes::from(out)
    }
}

/// The user records of `data` when it is a well-formed aggregate; `None` for an ordinary record.
pub fn deaggregate(data: &Bytes) -> Option<Vec<UserRecord>> {
    if data.len() < MAGIC.len() + DIGEST_LEN || data[..MAGIC.len()] != MAGIC {
        return None;
    }
    let proto = data.slice(MAGIC.len()..data.len() - DIGEST_LEN);
    if Md5::digest(&proto)[..] != data[data.len() - DIGEST_LEN..] {
        return None;
    }
    let record = AggregatedRecord::decode(proto).ok()?;
    let keys = &record.partition_key_table;
    record
        .records
        .into_iter()
        .map(|r| {
            let key = keys.get(usize::try_from(r.partition_key_index).ok()?)?;
            Some(UserRecord {
                partition_key: key.clone(),
                data: r.data,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn aggregate(records: &[(String, Vec<u8>)]) -> (Bytes, usize) {
        let mut a = Aggregator::new();
        let mut predicted = a.size();
        for (k, d) in records {
            predicted = a.size_with(k, d);
            a.add(k, Bytes::from(d.clone()));
            assert_eq!(a.size(), predicted, "size_with predicts the size");
        }
        (a.finish(), predicted)
    }

    proptest! {
        #[test]
        fn round_trip(records in prop::collection::vec(("[a-c]{1,3}", prop::collection::vec(any::<u8>(), 0..300)), 1..40)) {
            let (data, predicted) = aggregate(&records);
            prop_assert_eq!(data.len(), predicted);
            let back = deaggregate(&data).expect("an aggregate");
            let back: Vec<_> = back.into_iter().map(|r| (r.partition_key, r.data.to_vec())).collect();
            prop_assert_eq!(back, records);
        }

        #[test]
        fn random_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = deaggregate(&Bytes::from(data.clone()));
            let mut with_magic = MAGIC.to_vec();
            with_magic.extend(data);
            let _ = deaggregate(&Bytes::from(with_magic));
        }
    }

    #[test]
    fn ordinary_and_corrupt_records_are_not_aggregates() {
        assert_eq!(deaggregate(&Bytes::from_static(b"{\"event\":1}")), None);
        let (data, _) = aggregate(&[("k".into(), b"v".to_vec())]);
        let mut corrupt = data.to_vec();
        corrupt[6] ^= 1;
        assert_eq!(deaggregate(&Bytes::from(corrupt)), None, "checksum checked");
    }

    /// An aggregate as the official KPL writes it (bytes from its aggregation-format document's
    /// layout, built field by field): read by our de-aggregation.
    #[test]
    fn reads_a_hand_built_kpl_aggregate() {
        // AggregatedRecord { partition_key_table: ["pk"], records: [{0, "hi"}, {0, "yo"}] }
        let proto: Vec<u8> = vec![
            0x0A, 0x02, b'p', b'k', // field 1: "pk"
            0x1A, 0x06, 0x08, 0x00, 0x1A, 0x02, b'h', b'i', // field 3: {1: 0, 3: "hi"}
            0x1A, 0x06, 0x08, 0x00, 0x1A, 0x02, b'y', b'o', // field 3: {1: 0, 3: "yo"}
        ];
        let mut data = MAGIC.to_vec();
        data.extend(&proto);
        data.extend(Md5::digest(&proto));
        let records = deaggregate(&Bytes::from(data)).expect("an aggregate");
        assert_eq!(
            records,
            vec![
                UserRecord {
                    partition_key: "pk".into(),
                    data: Bytes::from_static(b"hi")
                },
                UserRecord {
                    partition_key: "pk".into(),
                    data: Bytes::from_static(b"yo")
                },
            ]
        );
    }
}
