//! The registry the daemon's metrics are registered in and encoded from, one family
//! at a time (src/metrics.rs defines the metrics; each module's own metrics register
//! here too).

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Encoder, Registry, TextEncoder};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// A registry encoded one metric family at a time: a `/metrics` answer holds the copies
/// of one family's series while it is written, not those of every family at once (as
/// `Registry::gather` does: at 200 groups that is megabytes, freed after the answer
/// but kept by the allocator). Names and labels are checked by a `Registry` beside it.
#[derive(Clone, Default)]
pub struct MetricRegistry {
    checked: Registry,
    /// Every collector, by the first name of its metrics.
    families: Arc<Mutex<Vec<Family>>>,
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
type Family = (String, Arc<dyn Collector>);

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
