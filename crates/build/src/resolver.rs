//! The frontend's base-image questions answered by the worker's image source. It lives
//! here, above both, so the worker does not depend on the frontend.

use std::sync::Arc;

/// BaseResolver answers the frontend's base-image questions through an [`kiln_worker::ImageSource`].
#[derive(Debug)]
pub struct BaseResolver {
    pub source: Arc<kiln_worker::ImageSource>,
    /// Each reference resolved and how long it took (BuildKit's `load metadata for` steps).
    pub resolved: std::sync::Mutex<Vec<(String, std::time::Duration)>>,
}

impl BaseResolver {
    pub fn new(source: Arc<kiln_worker::ImageSource>) -> Self {
        BaseResolver {
            source,
            resolved: std::sync::Mutex::new(Vec::new()),
        }
    }
}

impl kiln_frontend::ImageResolver for BaseResolver {
    fn resolve(
        &self,
        reference: &str,
        platform: &kiln_image::Platform,
    ) -> Result<kiln_frontend::ResolvedImage, String> {
        let t0 = std::time::Instant::now();
        let img = self.source.resolve(reference, platform).map_err(|e| e.to_string())?;
        if let Ok(mut r) = self.resolved.lock() {
            r.push((reference.to_string(), t0.elapsed()));
        }
        Ok(kiln_frontend::ResolvedImage {
            reference: img.shown,
            config: img.config,
        })
    }
}
