//! Model files for the browser: download from the widget's model base URL,
//! check each file's sha256 against the manifest compiled into this wasm, and
//! keep verified files in the Cache API for the next visit. The integrity
//! policy lives here, beside the manifest, so the worker script is only a
//! shim: nothing in JavaScript decides whether a model file is trusted.
//!
//! A cached file is keyed by its sha256 (`<base>/<sha256>/<file>`): a new
//! model version is a new entry, and a cached entry is hashed again before
//! use like a fresh download (storage can be altered by anything running on
//! the origin); a mismatching entry is deleted and the file fetched again.

use crate::error::FacegateError;
use crate::manifest::{self, ModelEntry};
use js_sys::{Function, Object, Promise, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{Cache, CacheStorage, ReadableStreamDefaultReader, Request, RequestCache, RequestInit, Response, Url};

/// The Cache API store the models live in.
const MODEL_CACHE: &str = "facegate-models-v1";

#[wasm_bindgen]
extern "C" {
    // the global `fetch` of whatever scope runs the wasm (the widget's
    // worker, a page, Node): web-sys reaches it only through Window or
    // WorkerGlobalScope, one type per scope
    #[wasm_bindgen(js_name = fetch)]
    fn global_fetch(request: &Request) -> Promise;
}

fn js_text(v: &JsValue) -> String {
    v.as_string()
        .or_else(|| Reflect::get(v, &"message".into()).ok().and_then(|m| m.as_string()))
        .unwrap_or_else(|| format!("{v:?}"))
}

fn download_error(entry: &ModelEntry, reason: impl std::fmt::Display) -> FacegateError {
    FacegateError::ModelDownload { name: entry.name.clone(), reason: reason.to_string() }
}

fn resolve(path: &str, base: &str, entry: &ModelEntry) -> crate::Result<String> {
    Url::new_with_base(path, base).map(|u| u.href()).map_err(|e| download_error(entry, format!("model base URL {base}: {}", js_text(&e))))
}

/// The origin's model cache, or None where there is none (Node, an insecure
/// origin, storage disabled): the widget then downloads every visit.
async fn open_cache() -> Option<Cache> {
    let storage = Reflect::get(&js_sys::global(), &"caches".into()).ok().filter(|c| !c.is_undefined() && !c.is_null())?;
    let storage: CacheStorage = storage.unchecked_into();
    JsFuture::from(storage.open(MODEL_CACHE)).await.ok().map(JsCast::unchecked_into)
}

/// A cached copy whose hash still matches the manifest; a copy that does
/// not is removed.
async fn from_cache(cache: &Cache, key: &str, entry: &ModelEntry) -> Option<Vec<u8>> {
    let hit = JsFuture::from(cache.match_with_str(key)).await.ok().filter(|h| !h.is_undefined())?;
    let response: Response = hit.unchecked_into();
    let buffer = JsFuture::from(response.array_buffer().ok()?).await.ok()?;
    let bytes = Uint8Array::new(&buffer).to_vec();
    if manifest::sha256_hex(&bytes) == entry.sha256 {
        return Some(bytes);
    }
    let _ = JsFuture::from(cache.delete_with_str(key)).await;
    None
}

/// The file's bytes, read chunk by chunk so the page can show progress.
/// `no-cache` revalidates with the server instead of trusting the HTTP
/// cache: the Cache API copy above is the one that is kept.
async fn download(url: &str, entry: &ModelEntry, on_chunk: &mut dyn FnMut(usize)) -> crate::Result<Vec<u8>> {
    let init = RequestInit::new();
    init.set_cache(RequestCache::NoCache);
    let request = Request::new_with_str_and_init(url, &init).map_err(|e| download_error(entry, format!("{url}: {}", js_text(&e))))?;
    let response: Response = JsFuture::from(global_fetch(&request))
        .await
        .map_err(|e| download_error(entry, format!("{url}: {}", js_text(&e))))?
        .unchecked_into();
    if !response.ok() {
        return Err(download_error(entry, format!("{url}: HTTP {}", response.status())));
    }
    let body = response.body().ok_or_else(|| download_error(entry, format!("{url}: empty response")))?;
    let reader: ReadableStreamDefaultReader = body.get_reader().unchecked_into();
    let mut bytes = Vec::with_capacity(entry.bytes as usize);
    loop {
        let chunk = JsFuture::from(reader.read()).await.map_err(|e| download_error(entry, format!("{url}: {}", js_text(&e))))?;
        if Reflect::get(&chunk, &"done".into()).map(|d| d.is_truthy()).unwrap_or(true) {
            break;
        }
        let value: Uint8Array = Reflect::get(&chunk, &"value".into()).map_err(|e| download_error(entry, js_text(&e)))?.unchecked_into();
        let at = bytes.len();
        bytes.resize(at + value.length() as usize, 0);
        value.copy_to(&mut bytes[at..]);
        on_chunk(value.length() as usize);
    }
    Ok(bytes)
}

/// One model: the cached copy if it verifies, else a download that must
/// verify before it is used or cached.
async fn model_bytes(entry: &ModelEntry, base: &str, cache: Option<&Cache>, on_bytes: &mut dyn FnMut(usize, bool)) -> crate::Result<Vec<u8>> {
    let key = resolve(&format!("{}/{}", entry.sha256, entry.file), base, entry)?;
    if let Some(cache) = cache {
        if let Some(bytes) = from_cache(cache, &key, entry).await {
            on_bytes(bytes.len(), true);
            return Ok(bytes);
        }
    }
    let url = resolve(&entry.file, base, entry)?;
    let mut bytes = download(&url, entry, &mut |n| on_bytes(n, false)).await?;
    manifest::verify(&entry.name, &bytes)?;
    if let Some(cache) = cache {
        // a full or disabled store only costs the next visit a download
        if let Ok(response) = Response::new_with_opt_u8_array(Some(&mut bytes)) {
            let _ = JsFuture::from(cache.put_with_str(&key, &response)).await;
        }
    }
    Ok(bytes)
}

/// Fetches the named models from `base` (the widget's model URL), one after
/// the other, each checked against the manifest and kept in the Cache API.
/// `onProgress(loaded, total, fromCache)` is called after every chunk with
/// byte counts over all the named models (total from the manifest).
/// Resolves to `{name: Uint8Array}`, the argument of `new FaceGate`,
/// `FaceGate.withoutDeferred` and (one name) `addDeferred`; rejects with
/// `model_download: …`, `model_integrity: …` or `unknown_model: …`.
pub async fn fetch_models(base: &str, names: &[String], on_progress: Option<&Function>) -> crate::Result<Object> {
    let entries = names.iter().map(|n| manifest::entry(n)).collect::<crate::Result<Vec<_>>>()?;
    let total: u64 = entries.iter().map(|e| e.bytes).sum();
    let cache = open_cache().await;
    let mut loaded = 0u64;
    let models = Object::new();
    for entry in &entries {
        let mut report = |n: usize, cached: bool| {
            loaded += n as u64;
            if let Some(f) = on_progress {
                let _ = f.call3(&JsValue::NULL, &(loaded as f64).into(), &(total as f64).into(), &cached.into());
            }
        };
        let bytes = model_bytes(entry, base, cache.as_ref(), &mut report).await?;
        let _ = Reflect::set(&models, &entry.name.as_str().into(), &Uint8Array::from(bytes.as_slice()));
    }
    Ok(models)
}
