//! The native half of the `lakemeans` Python package: thin translations from Python objects
//! to the library's job API (`lakemeans::job`), which the command line calls too. Everything
//! heavy runs with the GIL released. Errors keep the library's messages: bad input and bad
//! arguments become `ValueError`, failed writes `OSError`, the rest `RuntimeError`.

mod spark;

use std::path::PathBuf;

use arrow_array::RecordBatch;
use arrow_array::ffi_stream::{FFI_ArrowArrayStream, RecordBatchStreamReader};
use lakemeans::backend::DeviceChoice;
use lakemeans::error::Error;
use lakemeans::job::frame::{self, Frame};
use lakemeans::job::{self, FitJob, InitChoice};
use lakemeans::kmeans::{KMeansParams, Quiet};
use lakemeans::model::Model;
use lakemeans::prep::ScaleMethod;
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyCapsule, PyCapsuleMethods};

fn err(e: Error) -> PyErr {
    match e {
        Error::Usage(_) | Error::Input(_) => PyValueError::new_err(e.to_string()),
        Error::Output { .. } => PyOSError::new_err(e.to_string()),
        Error::NoAdapter(_) | Error::SoftwareOnly(_) | Error::Device(_) | Error::Internal(_) => {
            PyRuntimeError::new_err(e.to_string())
        }
    }
}

/// One of a few named values, or a `ValueError` that lists them.
fn pick<T: Copy>(what: &str, s: &str, options: &[(&str, T)]) -> PyResult<T> {
    options
        .iter()
        .find(|(n, _)| *n == s)
        .map(|o| o.1)
        .ok_or_else(|| {
            let names: Vec<String> = options.iter().map(|(n, _)| format!("'{n}'")).collect();
            PyValueError::new_err(format!(
                "{what} must be one of {}, got '{s}'",
                names.join(", ")
            ))
        })
}

fn device(s: &str) -> PyResult<DeviceChoice> {
    let c = [
        ("auto", DeviceChoice::Auto),
        ("cpu", DeviceChoice::Cpu),
        ("gpu", DeviceChoice::Gpu),
    ];
    pick("device", s, &c)
}

fn scale(s: &str) -> PyResult<ScaleMethod> {
    use ScaleMethod::*;
    pick(
        "scale",
        s,
        &[("none", None), ("standard", Standard), ("minmax", Minmax)],
    )
}

/// The init a name asks for; `File` paths are the command line's business.
fn init(s: &str) -> PyResult<InitChoice> {
    match InitChoice::parse(s) {
        InitChoice::File(_) => Err(PyValueError::new_err(format!(
            "init must be 'k-means++', 'random', 'k-means||' or an array of centroids, got '{s}'"
        ))),
        c => Ok(c),
    }
}

fn bytes_of<'py, T: Copy>(py: Python<'py>, v: &[T]) -> Bound<'py, PyBytes> {
    // SAFETY: plain numbers (u32, f32, f64) have no padding; the bytes are read as the same type
    // on the Python side (native byte order).
    let b =
        unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v)) };
    PyBytes::new(py, b)
}

fn weights(py: Python<'_>, w: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Vec<f32>>> {
    w.map(|w| PyBuffer::<f32>::get(w)?.to_vec(py)).transpose()
}

/// Rows handed over from Python, in input units.
#[pyclass(module = "lakemeans._native", frozen)]
struct Rows(Frame);

#[pymethods]
impl Rows {
    #[getter]
    fn features(&self) -> Vec<String> {
        self.0.features.clone()
    }
    #[getter]
    fn rows(&self) -> usize {
        self.0.data.rows()
    }
}

/// A 2-D float32 or float64 buffer (a NumPy array, C or Fortran order) read in place: the
/// only copy is into the engine's row-major `f32` rows.
#[pyfunction]
#[pyo3(signature = (x, sample_weight=None, names=None))]
fn rows_from_buffer(
    py: Python<'_>,
    x: &Bound<'_, PyAny>,
    sample_weight: Option<&Bound<'_, PyAny>>,
    names: Option<Vec<String>>,
) -> PyResult<Rows> {
    let w = weights(py, sample_weight)?;
    fn read<T: pyo3::buffer::Element + Copy + Send + Sync + Into<f64>>(
        py: Python<'_>,
        buf: PyBuffer<T>,
        names: Option<Vec<String>>,
        w: Option<Vec<f32>>,
    ) -> PyResult<Rows> {
        if buf.dimensions() != 2 {
            return Err(PyValueError::new_err(format!(
                "X must be 2-D (rows x features), got {} dimensions",
                buf.dimensions()
            )));
        }
        let (n, d) = (buf.shape()[0], buf.shape()[1]);
        let (s0, s1) = (buf.strides()[0], buf.strides()[1]);
        let base = buf.buf_ptr() as usize;
        let get = move |i: usize, j: usize| -> f64 {
            let at = base as isize + i as isize * s0 + j as isize * s1;
            // SAFETY: `buf` holds the exporter's memory until after the read, and (i, j) is
            // within its shape, so `at` points at one element of it.
            unsafe { std::ptr::read_unaligned(at as *const T) }.into()
        };
        let f = py.detach(move || frame::matrix(n, d, names, w, get));
        drop(buf);
        f.map(Rows).map_err(err)
    }
    match PyBuffer::<f32>::get(x) {
        Ok(b) => read(py, b, names, w),
        Err(_) => read(py, PyBuffer::<f64>::get(x)?, names, w),
    }
}

/// Any object with the Arrow PyCapsule stream interface (`__arrow_c_stream__`): a pyarrow
/// table, a polars data frame, ... Every column is a feature.
#[pyfunction]
#[pyo3(signature = (x, sample_weight=None))]
fn rows_from_stream(
    py: Python<'_>,
    x: &Bound<'_, PyAny>,
    sample_weight: Option<&Bound<'_, PyAny>>,
) -> PyResult<Rows> {
    let w = weights(py, sample_weight)?;
    let capsule = x.call_method0("__arrow_c_stream__")?;
    let capsule = capsule.cast::<PyCapsule>()?;
    let ptr = capsule.pointer_checked(Some(c"arrow_array_stream"))?;
    // SAFETY: the capsule named `arrow_array_stream` holds an FFI_ArrowArrayStream; from_raw
    // moves it out and leaves a released stream behind for the capsule's destructor.
    let reader =
        unsafe { RecordBatchStreamReader::from_raw(ptr.as_ptr().cast::<FFI_ArrowArrayStream>()) }
            .map_err(|e| PyValueError::new_err(format!("cannot read the Arrow stream ({e})")))?;
    let schema = arrow_array::RecordBatchReader::schema(&reader);
    let batches: Vec<RecordBatch> = reader
        .collect::<Result<_, _>>()
        .map_err(|e| PyValueError::new_err(format!("cannot read the Arrow stream ({e})")))?;
    py.detach(|| frame::arrow(&schema, &batches, w).map(Rows).map_err(err))
}

/// A fitted model: the JSON the command line's `--model` reads and writes.
#[pyclass(module = "lakemeans._native", name = "Model", frozen)]
#[derive(Clone)]
struct PyModel(Model);

#[pymethods]
impl PyModel {
    #[staticmethod]
    fn from_json(text: &str) -> PyResult<PyModel> {
        Model::from_json(text).map(PyModel).map_err(err)
    }
    #[staticmethod]
    fn load(path: PathBuf) -> PyResult<PyModel> {
        Model::load(&path).map(PyModel).map_err(err)
    }
    fn to_json(&self) -> PyResult<String> {
        self.0.to_json().map_err(err)
    }
    #[getter]
    fn features(&self) -> Vec<String> {
        self.0.features.clone()
    }
    #[getter]
    fn k(&self) -> usize {
        self.0.k
    }
    #[getter]
    fn centroids_input_units(&self) -> Vec<Vec<f64>> {
        self.0.centroids_input_units.clone()
    }
    #[getter]
    fn inertia(&self) -> f64 {
        self.0.inertia
    }
    #[getter]
    fn iterations(&self) -> usize {
        self.0.iterations
    }
    /// The seed the fit ran with (drawn afresh when the caller gave none).
    #[getter]
    fn seed(&self) -> u64 {
        self.0.seed
    }
    #[getter]
    fn scaling(&self) -> String {
        format!("{:?}", self.0.scaling.method).to_lowercase()
    }
}

/// What a fit hands back: the model, the labels (u32 bytes), the inertia and the iterations.
type Fitted<'py> = (PyModel, Bound<'py, PyBytes>, f64, usize);

/// Fits rows in memory (`job::frame::fit`). `centroids`, when given, is a float64 buffer of
/// k x features initial centroids in input units.
#[pyfunction]
#[pyo3(signature = (rows, k, *, init="k-means++", centroids=None, n_init=1, max_iter=300,
    tol=1e-4, seed=0, device="auto", scale="none"))]
#[allow(clippy::too_many_arguments)]
fn fit<'py>(
    py: Python<'py>,
    rows: &Rows,
    k: usize,
    init: &str,
    centroids: Option<&Bound<'py, PyAny>>,
    n_init: usize,
    max_iter: usize,
    tol: f64,
    seed: u64,
    device: &str,
    scale: &str,
) -> PyResult<Fitted<'py>> {
    let init = match centroids {
        Some(c) => InitChoice::Given(PyBuffer::<f64>::get(c)?.to_vec(py)?),
        None => self::init(init)?,
    };
    let job = frame::FrameFit {
        scale: self::scale(scale)?,
        init,
        params: KMeansParams {
            n_init,
            max_iter,
            tol,
            seed,
            ..KMeansParams::new(k)
        },
        device: self::device(device)?,
        adapter: None,
    };
    let run = py
        .detach(|| frame::fit(&rows.0, &job, &Quiet))
        .map_err(err)?;
    let r = &run.result;
    Ok((
        PyModel(run.model.clone()),
        bytes_of(py, &r.assignment.labels),
        r.inertia,
        r.iterations,
    ))
}

/// Labels (u32 bytes), squared distances (f32 bytes) and inertia of rows under a model.
#[pyfunction]
#[pyo3(signature = (model, rows, device="auto"))]
fn predict<'py>(
    py: Python<'py>,
    model: &PyModel,
    rows: &Rows,
    device: &str,
) -> PyResult<(Bound<'py, PyBytes>, Bound<'py, PyBytes>, f64)> {
    let device = self::device(device)?;
    let (a, inertia) = py
        .detach(|| frame::predict(&model.0, &rows.0, device, None))
        .map_err(err)?;
    Ok((bytes_of(py, &a.labels), bytes_of(py, &a.distances), inertia))
}

/// Distances of every row to every centroid (f64 bytes, rows x k), in clustered space.
#[pyfunction]
fn transform<'py>(py: Python<'py>, model: &PyModel, rows: &Rows) -> PyResult<Bound<'py, PyBytes>> {
    let d = py
        .detach(|| frame::distances(&model.0, &rows.0))
        .map_err(err)?;
    Ok(bytes_of(py, &d))
}

/// The command line's `fit` from Python: the streaming Parquet engine (`job::fit`).
#[pyfunction]
#[pyo3(signature = (paths, k, *, features=None, exclude=Vec::new(), weight=None, ids=Vec::new(),
    drop_invalid=false, init="auto", n_init=1, max_iter=300, tol=1e-4, seed=0, device="auto",
    scale="none", memory_budget=None, output=None, model=None))]
#[allow(clippy::too_many_arguments)]
fn fit_parquet<'py>(
    py: Python<'py>,
    paths: Vec<PathBuf>,
    k: usize,
    features: Option<Vec<String>>,
    exclude: Vec<String>,
    weight: Option<String>,
    ids: Vec<String>,
    drop_invalid: bool,
    init: &str,
    n_init: usize,
    max_iter: usize,
    tol: f64,
    seed: u64,
    device: &str,
    scale: &str,
    memory_budget: Option<u64>,
    output: Option<PathBuf>,
    model: Option<PathBuf>,
) -> PyResult<Fitted<'py>> {
    let mut job = FitJob::new(paths, k);
    job.read.features = features;
    job.read.exclude = exclude;
    job.read.weight = weight;
    job.read.ids = ids;
    job.read.drop_invalid = drop_invalid;
    job.init = InitChoice::parse(init);
    job.params.n_init = n_init;
    job.params.max_iter = max_iter;
    job.params.tol = tol;
    job.params.seed = seed;
    job.device = self::device(device)?;
    job.scale = self::scale(scale)?;
    if let Some(b) = memory_budget {
        job.prepare.budget = b;
    }
    job.prepare.extras = output.is_some();
    job.output = output;
    job.model = model;
    let run = py
        .detach(|| -> lakemeans::Result<_> {
            let run = job::fit(&job, &Quiet)?;
            let labels = run.labels().to_vec();
            let (model, inertia, iterations) =
                (run.model.clone(), run.result.inertia, run.result.iterations);
            run.outputs.commit()?;
            Ok((model, labels, inertia, iterations))
        })
        .map_err(err)?;
    Ok((PyModel(run.0), bytes_of(py, &run.1), run.2, run.3))
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // SAFETY: the import runs under the GIL before this module has started a thread; another
    // native thread of the interpreter reading the environment at this instant would race, the
    // same hazard Python's own `os.environ` writes carry.
    unsafe { lakemeans::backend::gpu::quiet_probing() };
    m.add_class::<Rows>()?;
    m.add_class::<PyModel>()?;
    m.add_function(wrap_pyfunction!(rows_from_buffer, m)?)?;
    m.add_function(wrap_pyfunction!(rows_from_stream, m)?)?;
    m.add_function(wrap_pyfunction!(fit, m)?)?;
    m.add_function(wrap_pyfunction!(predict, m)?)?;
    m.add_function(wrap_pyfunction!(transform, m)?)?;
    m.add_function(wrap_pyfunction!(fit_parquet, m)?)?;
    spark::register(m)
}
