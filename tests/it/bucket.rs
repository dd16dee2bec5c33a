//! `shoplake lake init` and `shoplake config check` on a lake bucket of the S3 emulator (moto),
//! with boto3, AWS's own Python SDK, putting the store's own lifecycle rule beforehand and reading
//! back what the binary set.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::e2e::{ok, python, shoplake};
use crate::kinesis::S3Lake;

/// Runs `script` (Python, boto3 client `s3` on the emulator) and parses what it prints as JSON.
fn boto3(lake: &S3Lake, script: &str) -> Value {
    let program = format!(
        "import boto3, json, sys\n\
         s3 = boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1', \
         aws_access_key_id='test', aws_secret_access_key='test')\n{script}"
    );
    let out = ok(Command::new(python())
        .args(["-c", &program, &lake.endpoint])
        .output()
        .unwrap());
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn lake_cmd(lake: &S3Lake, data: &Path, args: &[&str]) -> Output {
    let mut cmd = shoplake(data, args);
    lake.on(&mut cmd);
    cmd.env("SHOPLAKE_CONFIG", data.join("pipeline.toml"));
    cmd.output().unwrap()
}

/// (setting → (state, wanted, found)) of `lake init --json`'s output.
fn states(stdout: &str) -> std::collections::BTreeMap<String, (String, String, String)> {
    let rows: Vec<Value> = serde_json::from_str(stdout.trim()).unwrap();
    rows.iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap().to_owned();
            (s("setting"), (s("state"), s("wanted"), s("found")))
        })
        .collect()
}

/// A pipeline config with a KMS key, 3-day multipart clean-up, the raw archive kept 90 days (a
/// delivery stream archives) and the quarantine kept `quarantine`.
fn write_config(path: &Path, quarantine: &str) {
    std::fs::write(
        path,
        format!(
            "[lake]\nencryption = \"sse-kms\"\nkms_key_id = \"alias/shoplake-test\"\n\
             abort_multipart_uploads = \"3d\"\n\
             [retention]\nquarantine = \"{quarantine}\"\nraw_archive = \"90d\"\n\
             [firehose]\narchive_stream = \"shop-raw\"\n"
        ),
    )
    .unwrap();
}

#[test]
fn lake_init_sets_encryption_public_access_and_lifecycle_and_keeps_the_stores_own_rules() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let bucket = format!("bucket-{}", std::process::id());
    let Some(lake) = S3Lake::create(&runtime, &bucket) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    write_config(&data.join("pipeline.toml"), "30d");
    // The store already expires its own logs in this bucket.
    boto3(
        &lake,
        &format!(
            "s3.put_bucket_lifecycle_configuration(Bucket='{bucket}', LifecycleConfiguration={{'Rules': \
             [{{'ID': 'store-logs', 'Status': 'Enabled', 'Filter': {{'Prefix': 'logs/'}}, \
             'Expiration': {{'Days': 400}}}}]}})\nprint('{{}}')"
        ),
    );

    // A check changes nothing and fails, naming what differs.
    let out = lake_cmd(&lake, data, &["lake", "init", "--check", "--json"]);
    assert!(!out.status.success(), "a check of a bare bucket passed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("differs from the config") && stderr.contains("shoplake lake init"),
        "{stderr}"
    );
    let found = states(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(found["bucket"].0, "ok");
    for setting in [
        "encryption",
        "public access",
        "lifecycle shoplake-quarantine",
        "lifecycle shoplake-raw-archive",
        "lifecycle shoplake-abort-multipart-uploads",
    ] {
        assert_eq!(
            found[setting].0, "differs",
            "{setting}: {:?}",
            found[setting]
        );
    }
    assert_eq!(found["encryption"].1, "SSE-KMS (alias/shoplake-test)");
    assert_eq!(
        found["lifecycle shoplake-quarantine"].1,
        "expire lake/_quarantine/* after 30 days"
    );
    let untouched = boto3(
        &lake,
        &format!(
            "print(json.dumps([r['ID'] for r in \
             s3.get_bucket_lifecycle_configuration(Bucket='{bucket}')['Rules']]))"
        ),
    );
    assert_eq!(untouched, serde_json::json!(["store-logs"]));

    // init sets them; boto3 reads them back.
    let out = ok(lake_cmd(&lake, data, &["lake", "init", "--json"]));
    let done = states(&out);
    assert_eq!(done["encryption"].0, "changed");
    assert_eq!(done["public access"].0, "changed");
    let set = boto3(
        &lake,
        &format!(
            "enc = s3.get_bucket_encryption(Bucket='{bucket}')\
             ['ServerSideEncryptionConfiguration']['Rules'][0]['ApplyServerSideEncryptionByDefault']\n\
             pab = s3.get_public_access_block(Bucket='{bucket}')['PublicAccessBlockConfiguration']\n\
             rules = s3.get_bucket_lifecycle_configuration(Bucket='{bucket}')['Rules']\n\
             print(json.dumps({{'enc': enc, 'pab': pab, 'rules': {{r['ID']: r for r in rules}}}}))"
        ),
    );
    assert_eq!(set["enc"]["SSEAlgorithm"], "aws:kms");
    assert_eq!(set["enc"]["KMSMasterKeyID"], "alias/shoplake-test");
    for flag in [
        "BlockPublicAcls",
        "IgnorePublicAcls",
        "BlockPublicPolicy",
        "RestrictPublicBuckets",
    ] {
        assert_eq!(set["pab"][flag], true, "{flag}: {}", set["pab"]);
    }
    let rules = &set["rules"];
    assert_eq!(rules["store-logs"]["Expiration"]["Days"], 400, "{rules}");
    assert_eq!(
        rules["shoplake-quarantine"]["Filter"]["Prefix"],
        "lake/_quarantine/"
    );
    assert_eq!(rules["shoplake-quarantine"]["Expiration"]["Days"], 30);
    assert_eq!(
        rules["shoplake-raw-archive"]["Filter"]["Prefix"],
        "lake/raw/"
    );
    assert_eq!(rules["shoplake-raw-archive"]["Expiration"]["Days"], 90);
    assert_eq!(
        rules["shoplake-abort-multipart-uploads"]["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"],
        3
    );
    assert_eq!(rules.as_object().unwrap().len(), 4, "{rules}");

    // Now the check passes, and so does `config check` on the same lake.
    let out = ok(lake_cmd(
        &lake,
        data,
        &["lake", "init", "--check", "--json"],
    ));
    assert!(states(&out).values().all(|s| s.0 == "ok"), "{out}");
    let config = data.join("pipeline.toml").display().to_string();
    let out = ok(lake_cmd(&lake, data, &["config", "check", &config]));
    assert!(
        out.contains("The lake bucket") && out.contains("all blocked"),
        "{out}"
    );

    // A shorter quarantine in the config: config check names the rule that differs.
    write_config(&data.join("shorter.toml"), "10d");
    let shorter = data.join("shorter.toml").display().to_string();
    let out = lake_cmd(&lake, data, &["config", "check", &shorter]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("1 setting(s) (lifecycle shoplake-quarantine)"),
        "{stderr}"
    );

    // A bucket that does not exist yet is created, then set.
    let fresh = format!("fresh-{}", std::process::id());
    let out = ok(lake_cmd(
        &lake,
        data,
        &["lake", "init", &format!("s3://{fresh}/shop"), "--json"],
    ));
    let created = states(&out);
    assert_eq!(
        created["bucket"],
        ("changed".into(), "exists".into(), "missing".into())
    );
    let rules = boto3(
        &lake,
        &format!(
            "print(json.dumps(sorted(r['Filter']['Prefix'] for r in \
             s3.get_bucket_lifecycle_configuration(Bucket='{fresh}')['Rules'])))"
        ),
    );
    // The default raw archive is the `raw/` folder of the lake being set up.
    assert_eq!(
        rules,
        serde_json::json!(["", "shop/_quarantine/", "shop/raw/"])
    );

    // A local lake has no bucket to set.
    let mut cmd = shoplake(data, &["lake", "init"]);
    cmd.env("SHOPLAKE_CONFIG", data.join("pipeline.toml"));
    let out = cmd.output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not on S3"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
