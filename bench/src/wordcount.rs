//! `rflink-bench wordcount`: the `wordcount` example job end to end on an embedded MiniCluster,
//! against a hand-written single-threaded Rust word count of the same file, in the same run.
//!
//! * **Input** (untimed): `--words N` words drawn Zipf-like (s = 1.0) from `--vocab N` distinct
//!   synthetic lowercase ASCII words of 2 to 12 letters, all deterministic from `--seed S`; ten
//!   words per line, separated by single spaces. Written to a temporary directory (removed at the
//!   end), or to `--keep-input PATH` (kept).
//! * **Baseline**: one thread reads the whole file (`std::fs::read`), splits it with the job's
//!   tokenizer rules (`rflink_examples::tokenize`: a word is a maximal run of alphanumeric chars,
//!   lowercased; here lowercased only when needed) and counts in an `FxHashMap<String, u64>`
//!   (`get_mut(&str)` first, a `String` allocated only for a new word). Timed from before the read
//!   to after the map is complete.
//! * **rflink**: `MiniCluster::execute("wordcount", --input FILE --output OUT --parallelism P)` on
//!   a MiniCluster of 1 TaskManager with P slots, for P = 1 and P = 2. One cluster per P is started
//!   (and every TaskManager registered) before anything is timed and is reused by every run of that
//!   P; between runs the benchmark waits (untimed) until its slots are free again. Timed: building
//!   the job graph, submitting it through the Dispatcher and waiting for the job's result
//!   (`execute` polls the result every 10 ms), so the whole job: reading the input, tokenizing,
//!   the keyed exchange, counting and writing the output file.
//! * **Check** (untimed): the baseline's counts must equal the counts the generator drew, and
//!   every job's output file (`word count` per line) must equal the baseline's counts, else the
//!   benchmark fails.
//!
//! Runs are interleaved (baseline, p1, p2, baseline, p1, p2, ...) so noise hits every side; the
//! best and the median of each are reported, words/s = N / seconds.
//!
//! **`--tls`** (issue 10) measures what securing the cluster costs instead: two MiniClusters of
//! **2 TaskManagers with 1 slot each**, so a p=2 WordCount's keyed exchange crosses TaskManagers
//! over TCP (remote channels, the tasks' deployment over RPC), one plaintext and one with mutual
//! TLS 1.3 and the cluster secret on every RPC, blob and data connection (certificates made in
//! memory). Runs interleave baseline, plaintext, TLS; the TLS-on / TLS-off throughput ratio is
//! printed (goal ≥ 0.8), and the last line is `{"bench":"wordcount-tls",...}`.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rflink_rpc::security::certgen::{CertificateAuthority, Validity};
use rflink_rpc::security::{ClusterSecret, TlsContext, TransportSecurity};
use rflink_rpc::RpcConfig;
use rflink_runtime::executiongraph::JobStatus;
use rflink_runtime::minicluster::{MiniCluster, MiniClusterConfig};
use rflink_runtime::tasks::Jobs;
use rustc_hash::{FxHashMap, FxHashSet};

use crate::cli::{parse_flags, Flag};
use crate::stats::{json_number, median};
use crate::BoxError;

/// Option lines for the usage text.
pub const OPTIONS_HELP: &str =
    "  --words N          words in the generated input (default 20000000)
  --vocab N          distinct words, Zipf-distributed with s = 1.0 (default 10000)
  --seed S           seed of the vocabulary and of the text (default 42)
  --runs R           interleaved runs of baseline, p=1 and p=2 (default 3)
  --timeout-secs N   give up on a job after N s (default 600)
  --keep-input PATH  write the input to PATH and keep it (default: a temporary file)
  --tls              compare a 2-TaskManager p=2 WordCount with mutual TLS + cluster secret
                     against the same cluster in plaintext (TLS-on / TLS-off ratio)";

/// The parallelisms the job runs with.
const PARALLELISMS: [u32; 2] = [1, 2];

/// Words per line of the input.
const WORDS_PER_LINE: usize = 10;

/// Most distinct words allowed (the vocabulary and its distribution live in memory).
const MAX_VOCAB: usize = 10_000_000;

/// The Zipf exponent.
const ZIPF_S: f64 = 1.0;

/// Options of the `wordcount` benchmark.
#[derive(Debug, Clone)]
pub struct Options {
    pub words: usize,
    pub vocab: usize,
    pub seed: usize,
    pub runs: usize,
    pub timeout_secs: usize,
    pub keep_input: Option<PathBuf>,
    /// `--tls`: the TLS-on / TLS-off comparison instead of p=1 / p=2.
    pub tls: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            words: 20_000_000,
            vocab: 10_000,
            seed: 42,
            runs: 3,
            timeout_secs: 600,
            keep_input: None,
            tls: false,
        }
    }
}

impl Options {
    pub fn parse(args: &[String]) -> Result<Options, String> {
        let mut o = Options::default();
        // `--keep-input` takes a path; every other flag is numeric.
        let mut numeric = Vec::with_capacity(args.len());
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            if arg == "--keep-input" {
                let path = it.next().ok_or("--keep-input needs a value")?;
                o.keep_input = Some(PathBuf::from(path));
            } else if let Some(path) = arg.strip_prefix("--keep-input=") {
                o.keep_input = Some(PathBuf::from(path));
            } else if arg == "--tls" {
                o.tls = true;
            } else {
                numeric.push(arg.clone());
            }
        }
        if o.keep_input
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return Err("--keep-input needs a non-empty path".into());
        }
        parse_flags(
            &numeric,
            &mut [
                Flag {
                    name: "--words",
                    value: &mut o.words,
                    min: 1,
                },
                Flag {
                    name: "--vocab",
                    value: &mut o.vocab,
                    min: 1,
                },
                Flag {
                    name: "--seed",
                    value: &mut o.seed,
                    min: 0,
                },
                Flag {
                    name: "--runs",
                    value: &mut o.runs,
                    min: 1,
                },
                Flag {
                    name: "--timeout-secs",
                    value: &mut o.timeout_secs,
                    min: 1,
                },
            ],
        )?;
        if o.vocab > MAX_VOCAB {
            return Err(format!("--vocab must be at most {MAX_VOCAB}"));
        }
        Ok(o)
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs as u64)
    }
}

/// SplitMix64: a small, fast, seeded generator (Steele, Lea and Flood 2014).
pub(crate) struct SplitMix64(pub(crate) u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `0..n` (multiply-shift; the bias is negligible for small `n`).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// `n` distinct lowercase ASCII words of 2 to 12 letters; the same for the same seed.
fn vocabulary(n: usize, rng: &mut SplitMix64) -> Vec<String> {
    let mut seen = FxHashSet::default();
    let mut words = Vec::with_capacity(n);
    while words.len() < n {
        let len = 2 + rng.below(11) as usize;
        let word: String = (0..len)
            .map(|_| char::from(b'a' + rng.below(26) as u8))
            .collect();
        if seen.insert(word.clone()) {
            words.push(word);
        }
    }
    words
}

/// Cumulative Zipf weights of ranks `1..=n`: entry `i` is the sum of `1 / r^s` for `r <= i + 1`.
fn zipf_cdf(n: usize, s: f64) -> Vec<f64> {
    let mut total = 0.0;
    (1..=n)
        .map(|rank| {
            total += 1.0 / (rank as f64).powf(s);
            total
        })
        .collect()
}

/// A rank index (`0..cdf.len()`) drawn from the distribution `cdf`.
fn sample(cdf: &[f64], rng: &mut SplitMix64) -> usize {
    let total = cdf.last().copied().unwrap_or(0.0);
    let u = rng.next_f64() * total;
    cdf.partition_point(|&c| c <= u)
        .min(cdf.len().saturating_sub(1))
}

/// The generated input: where it is, and what the generator drew.
pub(crate) struct Input {
    pub(crate) path: PathBuf,
    pub(crate) bytes: u64,
    pub(crate) expected: FxHashMap<String, u64>,
}

/// Writes `options.words` Zipf-drawn words to `path`, ten per line.
pub(crate) fn generate(options: &Options, path: &Path) -> Result<Input, BoxError> {
    let mut rng = SplitMix64(options.seed as u64);
    let vocab = vocabulary(options.vocab, &mut rng);
    let cdf = zipf_cdf(options.vocab, ZIPF_S);
    let mut drawn = vec![0u64; vocab.len()];
    let file = std::fs::File::create(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let write_error = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    for i in 0..options.words {
        let rank = sample(&cdf, &mut rng);
        drawn[rank] += 1;
        if i % WORDS_PER_LINE != 0 {
            out.write_all(b" ").map_err(write_error)?;
        }
        out.write_all(vocab[rank].as_bytes()).map_err(write_error)?;
        if i % WORDS_PER_LINE == WORDS_PER_LINE - 1 || i + 1 == options.words {
            out.write_all(b"\n").map_err(write_error)?;
        }
    }
    let file = out.into_inner().map_err(|e| write_error(e.into_error()))?;
    file.sync_all().map_err(write_error)?;
    let bytes = file
        .metadata()
        .map_err(|e| format!("cannot stat {}: {e}", path.display()))?
        .len();
    let expected = vocab
        .into_iter()
        .zip(drawn)
        .filter(|&(_, n)| n > 0)
        .collect();
    Ok(Input {
        path: path.to_owned(),
        bytes,
        expected,
    })
}

/// Counts the words of `text` into `counts` with the rules of `rflink_examples::tokenize`;
/// returns how many words there were.
fn count_words(text: &str, counts: &mut FxHashMap<String, u64>) -> u64 {
    let mut total = 0;
    let mut lower = String::new();
    for word in text.split(|c: char| !c.is_alphanumeric()) {
        if word.is_empty() {
            continue;
        }
        total += 1;
        let key: &str = if word.is_ascii() {
            if word.bytes().any(|b| b.is_ascii_uppercase()) {
                lower.clear();
                lower.push_str(word);
                lower.make_ascii_lowercase();
                &lower
            } else {
                word
            }
        } else {
            lower = word.to_lowercase();
            &lower
        };
        match counts.get_mut(key) {
            Some(n) => *n += 1,
            None => {
                counts.insert(key.to_owned(), 1);
            }
        }
    }
    total
}

/// One timed baseline run: read the file, count its words.
fn baseline(path: &Path) -> Result<(Duration, u64, FxHashMap<String, u64>), BoxError> {
    let start = Instant::now();
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let text =
        std::str::from_utf8(&bytes).map_err(|e| format!("{} is not UTF-8: {e}", path.display()))?;
    let mut counts = FxHashMap::default();
    let total = count_words(text, &mut counts);
    drop(bytes);
    Ok((start.elapsed(), total, counts))
}

/// Parses the job's output: one `word count` line per word.
pub(crate) fn parse_output(text: &str) -> Result<FxHashMap<String, u64>, String> {
    let mut counts = FxHashMap::default();
    for (i, line) in text.lines().enumerate() {
        let (word, count) = line
            .rsplit_once(' ')
            .ok_or_else(|| format!("output line {}: expected `word count`: {line:?}", i + 1))?;
        let count: u64 = count
            .parse()
            .map_err(|e| format!("output line {}: bad count in {line:?}: {e}", i + 1))?;
        if counts.insert(word.to_owned(), count).is_some() {
            return Err(format!(
                "output line {}: word {word:?} appears twice",
                i + 1
            ));
        }
    }
    Ok(counts)
}

/// `Ok` if both count maps are equal; else a description of (up to 5 of) the differences.
pub(crate) fn compare(
    expected_name: &str,
    expected: &FxHashMap<String, u64>,
    actual_name: &str,
    actual: &FxHashMap<String, u64>,
) -> Result<(), String> {
    let mut problems = Vec::new();
    let mut differences = 0usize;
    for (word, &n) in expected {
        match actual.get(word) {
            Some(&m) if m == n => {}
            found => {
                differences += 1;
                if problems.len() < 5 {
                    problems.push(format!(
                        "{word:?}: {expected_name} {n}, {actual_name} {found:?}"
                    ));
                }
            }
        }
    }
    for (word, &m) in actual {
        if !expected.contains_key(word) {
            differences += 1;
            if problems.len() < 5 {
                problems.push(format!(
                    "{word:?}: not in {expected_name}, {actual_name} {m}"
                ));
            }
        }
    }
    if differences == 0 {
        return Ok(());
    }
    let sum = |m: &FxHashMap<String, u64>| m.values().sum::<u64>();
    Err(format!(
        "{actual_name} differs from {expected_name} in {differences} words ({} vs {} distinct, \
         {} vs {} in all), e.g. {}",
        actual.len(),
        expected.len(),
        sum(actual),
        sum(expected),
        problems.join("; ")
    ))
}

/// One measured side: a MiniCluster and the parallelism its job runs with.
struct Spec {
    /// The row's name.
    label: &'static str,
    parallelism: u32,
    task_managers: u32,
    slots_per_task_manager: u32,
    security: TransportSecurity,
}

impl Spec {
    fn slots(&self) -> u32 {
        self.task_managers * self.slots_per_task_manager
    }
}

/// The sides: p=1 and p=2 on one TaskManager, or (`--tls`) p=2 on two TaskManagers in
/// plaintext and with mutual TLS + the cluster secret.
fn specs(options: &Options) -> Result<Vec<Spec>, BoxError> {
    if !options.tls {
        return Ok(PARALLELISMS
            .iter()
            .map(|&p| Spec {
                label: if p == 1 {
                    "rflink wordcount p=1 (submit..result)"
                } else {
                    "rflink wordcount p=2 (submit..result)"
                },
                parallelism: p,
                task_managers: 1,
                slots_per_task_manager: p,
                security: TransportSecurity::plaintext(),
            })
            .collect());
    }
    let ca = CertificateAuthority::generate("bench CA", Validity::days(1))?;
    let node = ca.issue("bench node", &[], Validity::days(1))?;
    let tls = TlsContext::from_pem(
        node.cert_pem.as_bytes(),
        node.key_pem.expose().as_bytes(),
        ca.cert_pem().as_bytes(),
    )?;
    let secret = ClusterSecret::new(ClusterSecret::generate()?.expose())?;
    Ok(vec![
        Spec {
            label: "p=2 on 2 TMs, plaintext",
            parallelism: 2,
            task_managers: 2,
            slots_per_task_manager: 1,
            security: TransportSecurity::plaintext(),
        },
        Spec {
            label: "p=2 on 2 TMs, mutual TLS + secret",
            parallelism: 2,
            task_managers: 2,
            slots_per_task_manager: 1,
            security: TransportSecurity::new(Some(secret), Some(tls)),
        },
    ])
}

/// Starts the MiniCluster of `spec` that can run the example jobs, and waits until its
/// TaskManagers registered.
async fn start_cluster(spec: &Spec, timeout: Duration) -> Result<MiniCluster, BoxError> {
    let config = MiniClusterConfig {
        num_task_managers: spec.task_managers,
        slots_per_task_manager: spec.slots_per_task_manager,
        jobs: Jobs::new(rflink_examples::registry()),
        rpc: RpcConfig {
            security: spec.security.clone(),
            ..RpcConfig::default()
        },
        ..MiniClusterConfig::default()
    };
    let cluster = MiniCluster::start(config)
        .await
        .map_err(|e| format!("starting the MiniCluster of {}: {e}", spec.label))?;
    if let Err(e) = cluster
        .wait_for_task_managers(spec.task_managers, timeout)
        .await
    {
        let _ = cluster.close().await;
        return Err(format!("the TaskManagers of {}: {e}", spec.label).into());
    }
    Ok(cluster)
}

/// Waits (polling, untimed) until no job runs and every slot is free.
pub(crate) async fn wait_idle(
    cluster: &MiniCluster,
    slots: u32,
    timeout: Duration,
) -> Result<(), BoxError> {
    let start = Instant::now();
    loop {
        let o = cluster.overview().await?;
        if o.jobs_running == 0 && o.slots_available == slots && o.slots_total == slots {
            return Ok(());
        }
        if start.elapsed() > timeout {
            return Err(format!("cluster not idle after {timeout:?}: {o:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A path as a job argument.
pub(crate) fn arg_path(path: &Path) -> Result<String, BoxError> {
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("path {} is not UTF-8", path.display()).into())
}

/// One timed job run; checks its status and output against `expected`. Returns the time from
/// the `execute` call to the result, and the job's own net runtime.
async fn rflink_run(
    cluster: &MiniCluster,
    parallelism: u32,
    input: &Path,
    output: &Path,
    expected: &FxHashMap<String, u64>,
    timeout: Duration,
) -> Result<(Duration, Duration), BoxError> {
    let args = vec![
        "--input".to_owned(),
        arg_path(input)?,
        "--output".to_owned(),
        arg_path(output)?,
        "--parallelism".to_owned(),
        parallelism.to_string(),
    ];
    let start = Instant::now();
    let result = cluster
        .execute("wordcount", &args, timeout)
        .await
        .map_err(|e| format!("wordcount with parallelism {parallelism}: {e}"))?;
    let elapsed = start.elapsed();
    if result.status != JobStatus::Finished {
        return Err(format!(
            "wordcount with parallelism {parallelism} ended {}, expected FINISHED: {:?}",
            result.status, result.failure
        )
        .into());
    }
    let text = std::fs::read_to_string(output)
        .map_err(|e| format!("cannot read the job's output {}: {e}", output.display()))?;
    let actual = parse_output(&text)?;
    compare(
        "the baseline",
        expected,
        &format!("the job's output (parallelism {parallelism})"),
        &actual,
    )?;
    std::fs::remove_file(output).map_err(|e| format!("cannot remove {}: {e}", output.display()))?;
    let net = Duration::from_millis(u64::try_from(result.net_runtime).unwrap_or(0));
    Ok((elapsed, net))
}

/// The timings of one side over all runs.
#[derive(Default)]
pub(crate) struct Side {
    pub(crate) times: Vec<Duration>,
}

impl Side {
    pub(crate) fn best(&self) -> f64 {
        self.times
            .iter()
            .map(Duration::as_secs_f64)
            .fold(f64::INFINITY, f64::min)
    }

    pub(crate) fn median(&self) -> f64 {
        median(
            &self
                .times
                .iter()
                .map(Duration::as_secs_f64)
                .collect::<Vec<_>>(),
        )
    }
}

async fn measure(
    options: &Options,
    input: &Input,
    work_dir: &Path,
    clusters: &[(Spec, MiniCluster)],
) -> Result<(Side, Vec<Side>), BoxError> {
    let words = options.words as f64;
    let mut base = Side::default();
    let mut jobs: Vec<Side> = clusters.iter().map(|_| Side::default()).collect();
    for run in 1..=options.runs {
        let path = input.path.clone();
        let (elapsed, total, counts) = tokio::task::spawn_blocking(move || baseline(&path))
            .await
            .map_err(|e| format!("the baseline thread: {e}"))??;
        if total != options.words as u64 {
            return Err(format!(
                "the baseline counted {total} words, the generator wrote {}",
                options.words
            )
            .into());
        }
        compare("the generator", &input.expected, "the baseline", &counts)?;
        eprintln!(
            "wordcount: run {run}/{}: baseline {:.3} s ({:.2} M words/s)",
            options.runs,
            elapsed.as_secs_f64(),
            words / elapsed.as_secs_f64() / 1e6
        );
        base.times.push(elapsed);
        for (index, ((spec, cluster), side)) in clusters.iter().zip(&mut jobs).enumerate() {
            let p = spec.parallelism;
            wait_idle(cluster, spec.slots(), options.timeout()).await?;
            let output = work_dir.join(format!("out-{index}-run{run}.txt"));
            let (elapsed, net) =
                rflink_run(cluster, p, &input.path, &output, &counts, options.timeout()).await?;
            eprintln!(
                "wordcount: run {run}/{}: {} {:.3} s ({:.2} M words/s; job net \
                 runtime {:.3} s), output equals the baseline",
                options.runs,
                spec.label,
                elapsed.as_secs_f64(),
                words / elapsed.as_secs_f64() / 1e6,
                net.as_secs_f64()
            );
            side.times.push(elapsed);
        }
    }
    Ok((base, jobs))
}

/// The table of sides: best and median seconds and words/s.
fn print_table(words: f64, rows: &[(&str, &Side)]) {
    println!(
        "  {:<36} {:>9} {:>9} {:>16} {:>16}",
        "", "best s", "median s", "best M words/s", "median M words/s"
    );
    for (name, side) in rows {
        println!(
            "  {name:<36} {:>9.3} {:>9.3} {:>16.3} {:>16.3}",
            side.best(),
            side.median(),
            words / side.best() / 1e6,
            words / side.median() / 1e6
        );
    }
}

/// The `--tls` report: the plaintext and TLS sides and their ratio.
fn report_tls(
    options: &Options,
    input: &Input,
    base: &Side,
    jobs: &[Side],
) -> Result<(), BoxError> {
    let words = options.words as f64;
    let rate = |secs: f64| words / secs;
    let [plain, tls] = jobs else {
        return Err(format!("expected 2 sides, measured {}", jobs.len()).into());
    };
    println!(
        "wordcount --tls: {} words (vocabulary {}, seed {}), input {:.1} MB, {} runs interleaved \
         (baseline, plaintext, TLS); 2 TaskManagers x 1 slot, p=2 (remote channels); {} logical CPUs",
        options.words,
        options.vocab,
        options.seed,
        input.bytes as f64 / 1e6,
        options.runs,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    print_table(
        words,
        &[
            ("baseline (1 thread, FxHashMap)", base),
            ("p=2 on 2 TMs, plaintext", plain),
            ("p=2 on 2 TMs, mutual TLS + secret", tls),
        ],
    );
    let ratio = rate(tls.best()) / rate(plain.best());
    let ratio_median = rate(tls.median()) / rate(plain.median());
    println!(
        "TLS-on / TLS-off throughput: {ratio:.3} (median {ratio_median:.3}); goal >= 0.8; \
         plaintext / baseline {:.3}",
        rate(plain.best()) / rate(base.best())
    );
    println!("every job's output equalled the baseline's counts, which equalled the generator's");
    println!(
        "{{\"bench\":\"wordcount-tls\",\"words\":{},\"plain_words_per_s\":{},\
         \"tls_words_per_s\":{},\"baseline_words_per_s\":{},\"tls_ratio\":{},\
         \"tls_ratio_median\":{},\"runs\":{}}}",
        options.words,
        json_number(rate(plain.best()), 0),
        json_number(rate(tls.best()), 0),
        json_number(rate(base.best()), 0),
        json_number(ratio, 3),
        json_number(ratio_median, 3),
        options.runs,
    );
    Ok(())
}

fn report(options: &Options, input: &Input, base: &Side, jobs: &[Side]) -> Result<(), BoxError> {
    if options.tls {
        return report_tls(options, input, base, jobs);
    }
    let words = options.words as f64;
    let rate = |secs: f64| words / secs;
    let [p1, p2] = jobs else {
        return Err(format!("expected 2 parallelisms, measured {}", jobs.len()).into());
    };
    println!(
        "wordcount: {} words (vocabulary {}, Zipf s = {ZIPF_S:.1}, seed {}), input {:.1} MB, {} runs \
         interleaved (baseline, p=1, p=2); {} logical CPUs",
        options.words,
        options.vocab,
        options.seed,
        input.bytes as f64 / 1e6,
        options.runs,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    print_table(
        words,
        &[
            ("baseline (1 thread, FxHashMap)", base),
            ("rflink wordcount p=1 (submit..result)", p1),
            ("rflink wordcount p=2 (submit..result)", p2),
        ],
    );
    let ratio = |side: &Side| rate(side.best()) / rate(base.best());
    let ratio_median = |side: &Side| rate(side.median()) / rate(base.median());
    println!(
        "ratios (words/s over the baseline's): p1 {:.3} (median {:.3}), p2 {:.3} (median {:.3})",
        ratio(p1),
        ratio_median(p1),
        ratio(p2),
        ratio_median(p2)
    );
    println!("every job's output equalled the baseline's counts, which equalled the generator's");
    println!(
        "{{\"bench\":\"wordcount\",\"words\":{},\"p1_words_per_s\":{},\"p2_words_per_s\":{},\
         \"baseline_words_per_s\":{},\"p1_ratio\":{},\"p2_ratio\":{},\"vocab\":{},\"runs\":{}}}",
        options.words,
        json_number(rate(p1.best()), 0),
        json_number(rate(p2.best()), 0),
        json_number(rate(base.best()), 0),
        json_number(ratio(p1), 3),
        json_number(ratio(p2), 3),
        options.vocab,
        options.runs,
    );
    Ok(())
}

async fn run_async(options: Options) -> Result<(), BoxError> {
    let work_dir =
        tempfile::tempdir().map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    let input_path = match &options.keep_input {
        Some(path) => path.clone(),
        None => work_dir.path().join("input.txt"),
    };
    eprintln!(
        "wordcount: generating {} words over {} distinct into {} (untimed)",
        options.words,
        options.vocab,
        input_path.display()
    );
    let t = Instant::now();
    let input = {
        let options = options.clone();
        tokio::task::spawn_blocking(move || generate(&options, &input_path))
            .await
            .map_err(|e| format!("the generator thread: {e}"))??
    };
    eprintln!(
        "wordcount: input of {:.1} MB, {} distinct words drawn, generated in {:.2} s",
        input.bytes as f64 / 1e6,
        input.expected.len(),
        t.elapsed().as_secs_f64()
    );

    let mut clusters = Vec::with_capacity(PARALLELISMS.len());
    let mut started = Ok(());
    for spec in specs(&options)? {
        match start_cluster(&spec, options.timeout()).await {
            Ok(cluster) => clusters.push((spec, cluster)),
            Err(e) => {
                started = Err(e);
                break;
            }
        }
    }
    let measured = match started {
        Ok(()) => measure(&options, &input, work_dir.path(), &clusters).await,
        Err(e) => Err(e),
    };
    let mut fatal = Vec::new();
    let mut closed = Ok(());
    for (spec, cluster) in clusters {
        fatal.extend(cluster.fatal_errors());
        if let Err(e) = cluster.close().await {
            closed = Err(format!("closing the MiniCluster of {}: {e}", spec.label));
        }
    }
    let removed = work_dir
        .close()
        .map_err(|e| format!("cannot remove the temporary directory: {e}"));
    let (base, jobs) = measured?;
    closed?;
    removed?;
    if !fatal.is_empty() {
        return Err(format!("task managers reported fatal errors: {fatal:?}").into());
    }
    report(&options, &input, &base, &jobs)
}

/// Runs the benchmark in its own actix system on this thread; the last stdout line is JSON.
pub fn run(options: &Options) -> Result<(), BoxError> {
    let options = options.clone();
    actix_rt::System::new().block_on(run_async(options))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options_parse() {
        let o = Options::parse(&args(&["--words", "200_000", "--keep-input", "/tmp/x"]))
            .expect("options");
        assert_eq!((o.words, o.vocab, o.seed, o.runs), (200_000, 10_000, 42, 3));
        assert_eq!(o.keep_input, Some(PathBuf::from("/tmp/x")));
        let o = Options::parse(&args(&["--keep-input=in.txt", "--seed=7"])).expect("options");
        assert_eq!((o.seed, o.keep_input), (7, Some(PathBuf::from("in.txt"))));
        assert!(!o.tls);
        let o = Options::parse(&args(&["--tls", "--runs", "2"])).expect("options");
        assert!(o.tls && o.runs == 2);
        let specs = specs(&o).expect("specs");
        assert_eq!(specs.len(), 2);
        assert!(specs
            .iter()
            .all(|s| s.parallelism == 2 && s.task_managers == 2));
        assert_eq!(specs[0].security.describe(), "plaintext");
        assert_eq!(specs[1].security.describe(), "mutual TLS + cluster secret");
        assert!(Options::parse(&args(&["--keep-input"])).is_err());
        assert!(Options::parse(&args(&["--keep-input="])).is_err());
        assert!(Options::parse(&args(&["--words", "0"])).is_err());
        assert!(Options::parse(&args(&["--vocab", "0"])).is_err());
        assert!(Options::parse(&args(&["--vocab", "10000001"])).is_err());
        assert!(Options::parse(&args(&["--bogus", "1"])).is_err());
    }

    /// The baseline's tokenizer follows the job's exactly.
    #[test]
    fn baseline_counts_like_the_job_tokenizer() {
        let text = "To be, or NOT to be: that is the Question!\n\
                    Ärger über ÖL — straße STRASSE 42x x42 ünïcödé\tÉté\r\n\
                    a--b  c_d e.f ΣΊΣΥΦΟΣ ǅemal 123 ";
        let mut expected: FxHashMap<String, u64> = FxHashMap::default();
        for line in text.lines() {
            rflink_examples::tokenize(line, |w| *expected.entry(w).or_default() += 1);
        }
        let mut counts = FxHashMap::default();
        let total = count_words(text, &mut counts);
        assert_eq!(counts, expected);
        assert_eq!(total, expected.values().sum::<u64>());
    }

    #[test]
    fn generated_input_is_deterministic_and_counts_match() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = Options {
            words: 12_345,
            vocab: 500,
            ..Options::default()
        };
        let a = generate(&options, &dir.path().join("a")).expect("generate");
        let b = generate(&options, &dir.path().join("b")).expect("generate");
        let text_a = std::fs::read_to_string(&a.path).expect("read");
        let text_b = std::fs::read_to_string(&b.path).expect("read");
        assert_eq!(text_a, text_b);
        assert_eq!(text_a.lines().count(), 12_345usize.div_ceil(WORDS_PER_LINE));
        assert!(text_a
            .lines()
            .all(|l| !l.starts_with(' ') && !l.ends_with(' ') && !l.contains("  ")));
        assert!(a
            .expected
            .keys()
            .all(|w| (2..=12).contains(&w.len()) && w.bytes().all(|b| b.is_ascii_lowercase())));
        let (_, total, counts) = baseline(&a.path).expect("baseline");
        assert_eq!(total, 12_345);
        assert_eq!(counts, a.expected);
        // Zipf: the first-ranked word is by far the most frequent (about 1 / H(500) = 15 %).
        let top = counts.values().max().copied().unwrap_or(0);
        assert!(top > 1_200 && top < 2_600, "top count {top}");
    }

    #[test]
    fn vocabulary_is_distinct() {
        let words = vocabulary(5_000, &mut SplitMix64(1));
        let set: FxHashSet<&String> = words.iter().collect();
        assert_eq!(set.len(), 5_000);
    }

    #[test]
    fn zipf_sampling_stays_in_range() {
        let cdf = zipf_cdf(3, 1.0);
        let mut rng = SplitMix64(9);
        let mut seen = [0u32; 3];
        for _ in 0..11_000 {
            seen[sample(&cdf, &mut rng)] += 1;
        }
        // Weights 1, 1/2, 1/3 of 11/6: 6000, 3000, 2000 expected.
        assert!(
            seen[0] > 5_600 && seen[1] > 2_700 && seen[2] > 1_750,
            "{seen:?}"
        );
        assert_eq!(sample(&[1.0], &mut rng), 0);
    }

    #[test]
    fn output_parsing_and_comparison() {
        let out = parse_output("a 3\nbb 1\n").expect("parse");
        let mut expected = FxHashMap::default();
        expected.insert("a".to_owned(), 3);
        expected.insert("bb".to_owned(), 1);
        assert!(compare("x", &expected, "y", &out).is_ok());
        expected.insert("bb".to_owned(), 2);
        assert!(compare("x", &expected, "y", &out).is_err());
        expected.remove("bb");
        assert!(compare("x", &expected, "y", &out).is_err());
        assert!(parse_output("a 3\na 1\n").is_err());
        assert!(parse_output("a three\n").is_err());
        assert!(parse_output("lonely\n").is_err());
    }
}
