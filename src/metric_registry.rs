//! The registry the daemon's metrics are registered in and encoded from, one family
//! at a time (src/metrics.rs defines the metrics; each module's own metrics register
//! here too), and the compact labelled families the per-group metrics are made of
//! ([`Family`]).

use prometheus::core::{
    Atomic, AtomicF64, AtomicI64, AtomicU64, Collector, Desc, Describer, Number,
};
use prometheus::proto::{self, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{Encoder, Opts, Registry, TextEncoder};
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::{BuildHasherDefault, Hasher};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// A registry encoded one metric family at a time: a `/metrics` answer holds the copies
/// of one family's series while it is written, not those of every family at once (as
/// `Registry::gather` does: at 200 groups that is megabytes, freed after the answer
/// but kept by the allocator). Names and labels are checked by a `Registry` beside it.
#[derive(Clone, Default)]
pub struct MetricRegistry {
    checked: Registry,
    /// Every collector, by the first name of its metrics.
    families: Arc<Mutex<Vec<Registered>>>,
    /// The length of the last text encoded.
    last_len: Arc<AtomicUsize>,
}

impl MetricRegistry {
    /// Registers `collector` (an error for a name registered already or bad labels).
    pub fn register(&self, collector: impl Collector + 'static) -> prometheus::Result<()> {
        let collector: Arc<dyn Collector> = Arc::new(collector);
        self.checked
            .register(Box::new(SharedCollector(collector.clone())))?;
        let name = collector
            .desc()
            .iter()
            .map(|d| d.fq_name.clone())
            .min()
            .unwrap_or_default();
        let mut families = self.families.lock().unwrap_or_else(|e| e.into_inner());
        let at = families.partition_point(|(n, _)| *n <= name);
        families.insert(at, (name, collector));
        Ok(())
    }

    /// The text exposition of every family, in the order and form of
    /// `TextEncoder::encode(&Registry::gather())`.
    pub fn encode(&self) -> Vec<u8> {
        let families: Vec<Arc<dyn Collector>> = self
            .families
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(_, c)| c.clone())
            .collect();
        let encoder = TextEncoder::new();
        // Room for the last answer and some: the text is kept (the admin server's copy),
        // and a buffer grown by doubling would keep up to twice its size.
        let last = self.last_len.load(Ordering::Relaxed);
        let mut buf = Vec::with_capacity(last + last / 8);
        for collector in families {
            let mut mfs = collector.collect();
            mfs.retain(|mf| !mf.get_metric().is_empty());
            mfs.sort_by(|a, b| a.name().cmp(b.name()));
            mfs.iter_mut().for_each(sort_series);
            // Encoding into a Vec cannot fail for well-formed metrics, which `register`
            // checked.
            if let Err(e) = encoder.encode(&mfs, &mut buf) {
                tracing::error!(error = %e, "encoding metrics failed");
            }
        }
        buf.shrink_to_fit();
        self.last_len.store(buf.len(), Ordering::Relaxed);
        buf
    }
}

#[cfg(test)]
impl MetricRegistry {
    /// The text of `Registry::gather`, all families at once: what [`Self::encode`]
    /// must equal.
    pub(crate) fn gathered(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.checked.gather(), &mut buf)
            .expect("well-formed metrics");
        buf
    }
}

/// A collector and the first name of its metrics.
type Registered = (String, Arc<dyn Collector>);

/// One collector registered in two places.
struct SharedCollector(Arc<dyn Collector>);

impl Collector for SharedCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.0.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.0.collect()
    }
}

/// A family's series by their label values, as `Registry::gather` sorts them.
fn sort_series(mf: &mut MetricFamily) {
    mf.mut_metric().sort_by(|a, b| {
        let (a, b) = (a.get_label(), b.get_label());
        a.len()
            .cmp(&b.len())
            .then_with(|| a.iter().map(|l| l.value()).cmp(b.iter().map(|l| l.value())))
    });
}

/// A labelled family of counters (`CounterKind`) or gauges (`GaugeKind`): what a
/// prometheus `IntGaugeVec`, `IntCounterVec`, `GaugeVec` or `CounterVec` exports, byte
/// for byte, at a fraction of the memory. A prometheus vec's every series keeps a copy
/// of the family's descriptor (name, HELP, label names) and its own label pairs, some
/// 450 bytes a series; here the family holds one descriptor and each distinct label
/// value once, and a series only its value and the numbers of its label values (some
/// 40 bytes, and its slot in the family's map). Series whose label values join into the
/// same text (`["ab", "c"]`, `["a", "bc"]`) stay two series, where a prometheus vec
/// makes them one.
pub struct Family<P: Atomic, K> {
    core: Arc<FamilyCore<P>>,
    kind: PhantomData<fn() -> K>,
}

/// The series of a family whose values only go up.
pub struct CounterKind;
/// The series of a family whose values are set.
pub struct GaugeKind;

/// How the series of a kind are exported.
pub trait ValueKind {
    /// The family's type in the exposition.
    const TYPE: MetricType;

    /// Puts `value` in `metric`, as the kind's prometheus metric does.
    fn put(metric: &mut Metric, value: f64);
}

impl ValueKind for CounterKind {
    const TYPE: MetricType = MetricType::COUNTER;

    fn put(metric: &mut Metric, value: f64) {
        let mut c = proto::Counter::default();
        c.set_value(value);
        metric.set_counter(c);
    }
}

impl ValueKind for GaugeKind {
    const TYPE: MetricType = MetricType::GAUGE;

    fn put(metric: &mut Metric, value: f64) {
        let mut g = proto::Gauge::default();
        g.set_value(value);
        metric.set_gauge(g);
    }
}

/// `IntGaugeVec`'s compact twin.
pub type IntGaugeFamily = Family<AtomicI64, GaugeKind>;
/// `IntCounterVec`'s compact twin.
pub type IntCounterFamily = Family<AtomicU64, CounterKind>;
/// `GaugeVec`'s compact twin.
pub type GaugeFamily = Family<AtomicF64, GaugeKind>;
/// `CounterVec`'s compact twin.
pub type CounterFamily = Family<AtomicF64, CounterKind>;

struct FamilyCore<P> {
    desc: Desc,
    /// A series' label pairs in the order of their names (as prometheus sorts them).
    pairs: Vec<PairSource>,
    series: RwLock<Store<P>>,
}

/// Where a label pair of a series comes from.
#[derive(Clone, Copy)]
enum PairSource {
    /// The series' value of the family's n-th variable label.
    Variable(usize),
    /// The family's n-th constant label pair.
    Const(usize),
}

struct Store<P> {
    /// Series by the hash of their label values.
    by_hash: HashMap<u64, Arc<Series<P>>, BuildHasherDefault<PreHashed>>,
    /// Series whose hash another series (other values) has already: almost never any.
    collided: Vec<Arc<Series<P>>>,
    /// Every label value of the family, once, by the number series know it by.
    values: Vec<Arc<str>>,
    /// The number of each value in `values`.
    numbers: HashMap<Arc<str>, u32>,
}

/// The most variable labels a family has: a series keeps its values' numbers in
/// place, not in an allocation of their own.
const MAX_LABELS: usize = 4;

struct Series<P> {
    value: P,
    /// The numbers of the values of the family's variable labels, in their order.
    labels: [u32; MAX_LABELS],
}

impl<P> Store<P> {
    fn find<V: AsRef<str>>(&self, hash: u64, values: &[V]) -> Option<&Arc<Series<P>>> {
        let first = self.by_hash.get(&hash)?;
        if self.has(first, values) {
            return Some(first);
        }
        self.collided.iter().find(|s| self.has(s, values))
    }

    /// Whether `series` is the one of `values`.
    fn has<V: AsRef<str>>(&self, series: &Series<P>, values: &[V]) -> bool {
        series
            .labels
            .iter()
            .zip(values)
            .all(|(n, v)| &**self.value(*n) == v.as_ref())
    }

    fn value(&self, number: u32) -> &Arc<str> {
        &self.values[number as usize]
    }

    /// The number of `value`, given one the first time.
    fn number(&mut self, value: &str) -> u32 {
        if let Some(n) = self.numbers.get(value) {
            return *n;
        }
        let n = u32::try_from(self.values.len()).expect("fewer than 2^32 label values");
        let value: Arc<str> = Arc::from(value);
        self.values.push(value.clone());
        self.numbers.insert(value, n);
        n
    }
}

impl<P: Atomic, K> Clone for Family<P, K> {
    fn clone(&self) -> Self {
        Family {
            core: self.core.clone(),
            kind: PhantomData,
        }
    }
}

impl<P: Atomic, K: ValueKind> Family<P, K> {
    /// A family named and described by `opts` (constant labels included) with the
    /// variable labels `labels`, checked as prometheus's vecs check them (and no more
    /// than [`MAX_LABELS`] of them).
    pub fn new(opts: Opts, labels: &[&str]) -> prometheus::Result<Self> {
        if labels.len() > MAX_LABELS {
            return Err(prometheus::Error::Msg(format!(
                "{}: {} variable labels, at most {MAX_LABELS}",
                opts.fq_name(),
                labels.len()
            )));
        }
        let desc = opts
            .variable_labels(labels.iter().map(|l| (*l).to_owned()).collect())
            .describe()?;
        let mut named: Vec<(&str, PairSource)> = desc
            .variable_labels
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), PairSource::Variable(i)))
            .chain(
                desc.const_label_pairs
                    .iter()
                    .enumerate()
                    .map(|(i, p)| (p.name(), PairSource::Const(i))),
            )
            .collect();
        named.sort_by(|a, b| a.0.cmp(b.0));
        let pairs = named.into_iter().map(|(_, p)| p).collect();
        Ok(Family {
            core: Arc::new(FamilyCore {
                desc,
                pairs,
                series: RwLock::new(Store {
                    by_hash: HashMap::default(),
                    collided: Vec::new(),
                    values: Vec::new(),
                    numbers: HashMap::new(),
                }),
            }),
            kind: PhantomData,
        })
    }

    /// The series of `values` (one per variable label, in their order), created at 0
    /// the first time. Finding an existing series allocates nothing.
    ///
    /// # Panics
    ///
    /// With a number of values other than the number of labels, as prometheus's
    /// `with_label_values` does.
    pub fn with_label_values<V: AsRef<str>>(&self, values: &[V]) -> Child<P, K> {
        let core = &*self.core;
        assert_eq!(
            values.len(),
            core.desc.variable_labels.len(),
            "label values of {}",
            core.desc.fq_name
        );
        let hash = hash_values(values);
        let found = core
            .series
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .find(hash, values)
            .cloned();
        let series = match found {
            Some(series) => series,
            None => {
                let mut store = core.series.write().unwrap_or_else(|e| e.into_inner());
                match store.find(hash, values) {
                    Some(series) => series.clone(),
                    None => {
                        let mut labels = [0; MAX_LABELS];
                        for (n, v) in labels.iter_mut().zip(values) {
                            *n = store.number(v.as_ref());
                        }
                        let series = Arc::new(Series {
                            value: P::new(<P::T as Number>::from_i64(0)),
                            labels,
                        });
                        match store.by_hash.entry(hash) {
                            Entry::Vacant(e) => {
                                e.insert(series.clone());
                            }
                            Entry::Occupied(_) => {
                                store.collided.push(series.clone());
                            }
                        }
                        series
                    }
                }
            }
        };
        Child {
            series,
            kind: PhantomData,
        }
    }

    fn metric(&self, store: &Store<P>, series: &Series<P>) -> Metric {
        let desc = &self.core.desc;
        let labels = self
            .core
            .pairs
            .iter()
            .map(|p| match *p {
                PairSource::Variable(i) => {
                    let mut pair = LabelPair::default();
                    pair.set_name(desc.variable_labels[i].clone());
                    pair.set_value(store.value(series.labels[i]).to_string());
                    pair
                }
                PairSource::Const(i) => desc.const_label_pairs[i].clone(),
            })
            .collect();
        let mut m = Metric::from_label(labels);
        K::put(&mut m, series.value.get().into_f64());
        m
    }
}

impl<P: Atomic + 'static, K: ValueKind + 'static> Collector for Family<P, K> {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.core.desc]
    }

    /// The family as its prometheus vec collects it, series sorted by label values.
    fn collect(&self) -> Vec<MetricFamily> {
        let metrics = {
            let store = self.core.series.read().unwrap_or_else(|e| e.into_inner());
            store
                .by_hash
                .values()
                .chain(&store.collided)
                .map(|s| self.metric(&store, s))
                .collect()
        };
        let desc = &self.core.desc;
        let mut mf = MetricFamily::default();
        mf.set_name(desc.fq_name.clone());
        mf.set_help(desc.help.clone());
        mf.set_field_type(K::TYPE);
        mf.set_metric(metrics);
        sort_series(&mut mf);
        vec![mf]
    }
}

/// One series of a [`Family`].
pub struct Child<P, K> {
    series: Arc<Series<P>>,
    kind: PhantomData<fn() -> K>,
}

impl<P: Atomic> Child<P, GaugeKind> {
    /// Sets the value.
    pub fn set(&self, value: P::T) {
        self.series.value.set(value);
    }
}

impl<P: Atomic> Child<P, CounterKind> {
    /// Adds one.
    pub fn inc(&self) {
        self.series.value.inc_by(<P::T as Number>::from_i64(1));
    }

    /// Adds `value`, which must not be negative.
    pub fn inc_by(&self, value: P::T) {
        debug_assert!(value >= <P::T as Number>::from_i64(0));
        self.series.value.inc_by(value);
    }

    /// The value.
    pub fn get(&self) -> P::T {
        self.series.value.get()
    }
}

/// FNV-1a of the values, each followed by a byte no UTF-8 text holds (prometheus
/// hashes them without one, so that `["ab", "c"]` and `["a", "bc"]` are one series).
fn hash_values<V: AsRef<str>>(values: &[V]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for v in values {
        for b in v.as_ref().bytes().chain([0xff]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// The hasher of keys that are hashes already.
#[derive(Default)]
struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::core::{GenericCounterVec, GenericGaugeVec};
    use proptest::prelude::*;

    /// Variable label names, not in the order of their names; the constant label sorts
    /// between them.
    const NAMES: [&str; MAX_LABELS] = ["signal", "group", "reason", "cluster"];

    fn opts(constant: bool) -> Opts {
        let opts =
            Opts::new("some_total", "Help with \\ and \"\nlines.").namespace("kube_failover");
        if constant {
            opts.const_label("instance", "a\"b")
        } else {
            opts
        }
    }

    /// `a` and `b` as /metrics encodes them, one collector at a time and in a whole
    /// gather, and as collected (series sorted).
    fn assert_same(a: impl Collector + Clone + 'static, b: impl Collector + Clone + 'static) {
        // Compared as text: a NaN value is not equal to itself.
        let collected = |c: &dyn Collector| {
            let mut mfs = c.collect();
            mfs.iter_mut().for_each(sort_series);
            format!("{mfs:?}")
        };
        assert_eq!(collected(&a), collected(&b));
        let (ra, rb) = (MetricRegistry::default(), MetricRegistry::default());
        ra.register(a).unwrap();
        rb.register(b).unwrap();
        let text = |r: &MetricRegistry| String::from_utf8(r.encode()).unwrap();
        assert_eq!(text(&ra), text(&rb));
        assert_eq!(ra.gathered(), rb.gathered());
    }

    /// Label values (escaped ones among them), one per label of each series.
    fn series() -> impl Strategy<Value = (usize, bool, Vec<Vec<String>>)> {
        (1usize..=MAX_LABELS, any::<bool>()).prop_flat_map(|(n, constant)| {
            let value = prop_oneof![r#"[ab]{0,2}"#, r#"[ab"\\\né]{0,3}"#];
            (
                Just(n),
                Just(constant),
                prop::collection::vec(prop::collection::vec(value, n), 1..6),
            )
        })
    }

    /// prometheus's vecs hash label values without a separator: series whose values
    /// join into the same text are one series there, two here. Cases with such series
    /// are left out.
    fn distinct_when_joined(series: &[Vec<String>]) -> bool {
        let mut joined = HashMap::new();
        series
            .iter()
            .all(|s| joined.entry(s.concat()).or_insert(s) == &s)
    }

    fn float() -> impl Strategy<Value = f64> {
        prop_oneof![
            -1e3..1e3f64,
            any::<f64>(),
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(0.1),
        ]
    }

    fn labels(series: &[Vec<String>], at: usize) -> Vec<&str> {
        series[at % series.len()]
            .iter()
            .map(String::as_str)
            .collect()
    }

    proptest! {
        #[test]
        fn an_int_gauge_family_exports_what_an_int_gauge_vec_does(
            (n, constant, series) in series(),
            ops in prop::collection::vec((any::<usize>(), prop::option::of(any::<i64>())), 0..30),
        ) {
            prop_assume!(distinct_when_joined(&series));
            let vec = GenericGaugeVec::<AtomicI64>::new(opts(constant), &NAMES[..n]).unwrap();
            let family = IntGaugeFamily::new(opts(constant), &NAMES[..n]).unwrap();
            for (at, op) in ops {
                let values = labels(&series, at);
                let (v, f) = (vec.with_label_values(&values), family.with_label_values(&values));
                if let Some(x) = op {
                    v.set(x);
                    f.set(x);
                }
            }
            assert_same(vec, family);
        }

        #[test]
        fn a_gauge_family_exports_what_a_gauge_vec_does(
            (n, constant, series) in series(),
            ops in prop::collection::vec((any::<usize>(), prop::option::of(float())), 0..30),
        ) {
            prop_assume!(distinct_when_joined(&series));
            let vec = GenericGaugeVec::<AtomicF64>::new(opts(constant), &NAMES[..n]).unwrap();
            let family = GaugeFamily::new(opts(constant), &NAMES[..n]).unwrap();
            for (at, op) in ops {
                let values = labels(&series, at);
                let (v, f) = (vec.with_label_values(&values), family.with_label_values(&values));
                if let Some(x) = op {
                    v.set(x);
                    f.set(x);
                }
            }
            assert_same(vec, family);
        }

        #[test]
        fn an_int_counter_family_exports_what_an_int_counter_vec_does(
            (n, constant, series) in series(),
            ops in prop::collection::vec((any::<usize>(), 0u8..3, 0u64..1000), 0..30),
        ) {
            prop_assume!(distinct_when_joined(&series));
            let vec = GenericCounterVec::<AtomicU64>::new(opts(constant), &NAMES[..n]).unwrap();
            let family = IntCounterFamily::new(opts(constant), &NAMES[..n]).unwrap();
            for (at, op, by) in ops {
                let values = labels(&series, at);
                let (v, f) = (vec.with_label_values(&values), family.with_label_values(&values));
                match op {
                    0 => {}
                    1 => {
                        v.inc();
                        f.inc();
                    }
                    _ => {
                        v.inc_by(by);
                        f.inc_by(by);
                    }
                }
                prop_assert_eq!(v.get(), f.get());
            }
            assert_same(vec, family);
        }

        #[test]
        fn a_counter_family_exports_what_a_counter_vec_does(
            (n, constant, series) in series(),
            ops in prop::collection::vec(
                (any::<usize>(), 0u8..3, prop_oneof![0.0..1e6f64, Just(0.1), Just(f64::INFINITY)]),
                0..30,
            ),
        ) {
            prop_assume!(distinct_when_joined(&series));
            let vec = GenericCounterVec::<AtomicF64>::new(opts(constant), &NAMES[..n]).unwrap();
            let family = CounterFamily::new(opts(constant), &NAMES[..n]).unwrap();
            for (at, op, by) in ops {
                let values = labels(&series, at);
                let (v, f) = (vec.with_label_values(&values), family.with_label_values(&values));
                match op {
                    0 => {}
                    1 => {
                        v.inc();
                        f.inc();
                    }
                    _ => {
                        v.inc_by(by);
                        f.inc_by(by);
                    }
                }
                prop_assert_eq!(v.get().to_bits(), f.get().to_bits());
            }
            assert_same(vec, family);
        }
    }

    #[test]
    fn names_and_labels_are_checked_as_prometheus_checks_them() {
        assert!(IntGaugeFamily::new(Opts::new("bad-name", "h"), &["group"]).is_err());
        assert!(IntGaugeFamily::new(Opts::new("ok", "h"), &["bad-label"]).is_err());
        assert!(IntGaugeFamily::new(Opts::new("ok", "h"), &["group", "group"]).is_err());
        assert!(IntGaugeFamily::new(Opts::new("ok", "h"), &["a", "b", "c", "d"]).is_ok());
        assert!(IntGaugeFamily::new(Opts::new("ok", "h"), &["a", "b", "c", "d", "e"]).is_err());
        let family = IntGaugeFamily::new(Opts::new("ok", "h"), &["group"]).unwrap();
        let r = MetricRegistry::default();
        r.register(family.clone()).unwrap();
        assert!(r.register(family).is_err(), "registered twice");
    }

    #[test]
    fn series_whose_values_join_into_one_text_stay_apart() {
        let family = IntCounterFamily::new(Opts::new("joined", "h"), &["a", "b"]).unwrap();
        family.with_label_values(&["ab", "c"]).inc();
        family.with_label_values(&["a", "bc"]).inc_by(2);
        family.with_label_values(&["a", "bc"]).inc_by(2);
        assert_eq!(family.with_label_values(&["ab", "c"]).get(), 1);
        assert_eq!(family.with_label_values(&["a", "bc"]).get(), 4);
        let r = MetricRegistry::default();
        r.register(family).unwrap();
        let text = String::from_utf8(r.encode()).unwrap();
        assert!(
            text.contains("joined{a=\"a\",b=\"bc\"} 4\njoined{a=\"ab\",b=\"c\"} 1\n"),
            "{text}"
        );
    }

    #[test]
    #[should_panic(expected = "label values of kube_failover_some_total")]
    fn a_wrong_number_of_label_values_panics_as_with_a_vec() {
        IntGaugeFamily::new(opts(false), &["group"])
            .unwrap()
            .with_label_values(&["a", "b"]);
    }
}
