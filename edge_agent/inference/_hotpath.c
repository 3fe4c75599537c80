/* One-sample predictions with their monitoring, in one native call.
 *
 * The optional native twin of ServingModel.predict_one + WindowAccumulator.record_one
 * (edge_agent/inference/serving.py, edge_agent/contract/window.py): the same checks, errors, counts and
 * bins, without the Python bytecode between them. edge_agent/inference/hotpath.py builds a
 * Runner from a ServingModel; where this module is not built (no C compiler on the
 * device) the agent serves through the pure-Python path, which tests compare with this.
 *
 * A Runner holds buffer views of the accumulator's NumPy arrays, which the accumulator
 * therefore only ever updates in place. Per call it:
 *   1. takes a float32 or float64 sample of the model's shape (any buffer, strided
 *      too), else returns None so the caller falls back to the general path (also when the interpreter's
 *      batch is not 1);
 *   2. under the serving lock: refuses NaN / out-of-range inputs the schema refuses
 *      (counted as invalid_input, the message from nan_problem / range_problem naming
 *      the features); SetTensor / Invoke / GetTensor on the runtime's wrapped
 *      interpreter, timed (a runtime error is counted as invoke_error);
 *   3. under the monitor lock: appends the sample, its predicted class, top-1
 *      confidence and latency to a buffer of RING samples and counts it in the window's
 *      n, whatever the output (an accepted NaN input is counted in its feature's NaN
 *      bin; an output holding NaN has no class and a NaN confidence). A full buffer (or
 *      the accumulator's close, through Runner.drain) is folded feature by feature:
 *      bins (underflow, interior bins with the last one closed, overflow, NaN),
 *      count/mean/M2/min/max of values of magnitude <= moment_limit merged by Chan's
 *      formula, range misses; the typicality energy of samples with finite inputs
 *      (squared projections on typ_dirs, centred on typ_mean; see
 *      edge_agent/contract/calibration.py); then classes, confidence (counts and the per-bin
 *      sums of finite top-1 confidences) and latency. Then a NaN / infinite output is refused
 *      (nan_output);
 *      Folding a block keeps the window's arrays in cache, which the model's own
 *      invocation evicts between samples;
 *   4. tells the probation monitor, if any; returns Prediction(outputs [1, C], labels,
 *      version, errors=()).
 *
 * A tensor sample (``tensor``: [*sample_shape] or [1, *sample_shape], channels on the
 * last axis) is counted as WindowAccumulator counts it through InputSchema.monitor: the
 * buffered row is each channel's mean, standard deviation and energy over its positions
 * (summed position by position, the order NumPy sums a channels-last block in; no
 * fused multiply-adds), then the outputs when ``monitor_outputs``; a channel with a
 * value out of its range (``chan_range``) counts in its summaries' range misses; and
 * the raw values are buffered channel by channel and folded into the per-channel value
 * histograms (``chan_hist``) by counting, per edge, the values at or above it (in
 * float32, against each edge rounded up to the float32 values it admits: exact).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stddef.h>
#include <string.h>
#include <time.h>

/* a * b + c must round twice, as NumPy's summaries do: no fused multiply-add. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#define MAX_RANK 8


typedef struct {
    PyObject_HEAD
    PyObject *model;        /* LoadedModel: _batch is checked on each call */
    PyObject *interpreter;  /* the runtime's public Interpreter */
    PyObject *in_index, *out_index, *subgraph;
    PyObject *staging;      /* float32 [1, F] handed to SetTensor */
    PyObject *serve_acquire, *serve_release, *monitor_acquire, *monitor_release;
    PyObject *record_error, *error_type, *range_problem, *nan_problem;
    PyTypeObject *result_type; /* Prediction: a tuple (outputs, labels, model, errors) */
    PyObject *labels, *version;
    int refuse_nan, refuse_range, count_range;
    double moment_limit; /* monitor.MOMENT_LIMIT */
    /* n_inputs: values in one sample; n_features: values the window counts per sample
     * (the sample's, or for a tensor 3 summaries per channel; then the outputs with
     * monitor_outputs). */
    Py_ssize_t n_inputs, n_features, n_classes;
    int tensor, monitor_outputs, chan_range, rank;
    Py_ssize_t shape[MAX_RANK];
    Py_ssize_t n_channels, positions, n_chan_bins; /* n_chan_bins: 0 or n_channels */
    Py_ssize_t cap; /* samples the buffer holds (RING, fewer for large tensors) */
    /* Views kept for the Runner's life: see the module comment. */
    Py_buffer b_staging, b_refuse_lo, b_refuse_hi, b_edges, b_edge_off, b_hist, b_hist_off;
    Py_buffer b_count, b_mean, b_m2, b_min, b_max, b_lo, b_hi, b_oor;
    Py_buffer b_classes, b_conf_edges, b_conf, b_conf_sum, b_lat_edges, b_latency, b_tally;
    Py_buffer b_typ_dirs, b_typ_mean, b_typ_n, b_typ_sum;
    Py_buffer b_chan_index, b_chan_edges, b_chan_edge_off, b_chan_hist, b_chan_hist_off;
    Py_buffer b_chan_lo, b_chan_hi;
    /* Per channel: each edge but the last rounded up to float32 (v >= e iff v >= that),
     * then the least float32 above the last edge (v > e iff v >= that). */
    float *chan_thr;
    long long *chan_ge; /* scratch: values at or above each threshold */
    Py_ssize_t typ_k; /* typicality directions (rows of typ_dirs); 0: none counted */
    int n_views;
    /* Each feature's edges padded with +inf to an even length, for bin_pairs. */
    double *padded;
    Py_ssize_t *padded_off, *last; /* per feature: start in padded, index of its last edge */
    /* Samples counted in n but not yet binned (guarded by the monitor lock): inputs,
     * predicted class, top-1 confidence, latency. Folded RING at a time, feature by
     * feature, so the window's arrays stay in cache while they are updated. */
    double *ring;    /* [cap, n_features] */
    float *ring_ch;  /* [n_channels, cap, positions] raw values (with channel bins) */
    double *ring_top, *ring_latency;
    Py_ssize_t *ring_best;
    Py_ssize_t pending;
    int ready; /* set when __init__ completed; nothing else is used before */
    PyObject *weakreflist;
} Runner;

#define RING 64

static PyObject *s_interpreter, *s_batch, *s_set, *s_invoke, *s_get, *s_acquire, *s_release,
    *s_observe, *s_invalid, *s_invoke_error, *s_nan_output, *s_one, *s_zero;

/* The count index of v for edges e[0..ne-1] (see edge_agent/contract/histogram.py):
 * the number of edges <= v (searchsorted side="right"), but k for v == e[k] (the last
 * interior bin is closed) and k + 2 for NaN. Branch-free: values land anywhere. */
static inline Py_ssize_t bin_of(const double *e, Py_ssize_t ne, double v) {
    Py_ssize_t k = ne - 1;
    if (isnan(v)) return k + 2;
    if (v == e[k]) return k;
    if (ne <= 32) {
        Py_ssize_t n = 0;
        for (Py_ssize_t i = 0; i < ne; i++) n += e[i] <= v;
        return n;
    }
    const double *base = e; /* the last edge <= v, by halving without branches */
    Py_ssize_t n = ne;
    while (n > 1) {
        Py_ssize_t half = n >> 1;
        base = base[half] <= v ? base + half : base;
        n -= half;
    }
    return (base - e) + (*base <= v);
}

typedef double pair_d __attribute__((vector_size(16)));
typedef long long pair_l __attribute__((vector_size(16)));

/* bin_of for one feature's edges padded with +inf to an even length ``w`` (``k`` the
 * index of the last real edge): the comparisons two at a time, in the vector unit
 * where there is one (SSE2, NEON). */
static inline Py_ssize_t bin_pairs(const double *e, Py_ssize_t k, Py_ssize_t w, double v) {
    if (isnan(v)) return k + 2;
    if (v >= e[k]) return v == e[k] ? k : k + 1; /* also +inf, which the padding equals */
    pair_l acc = {0, 0};
    pair_d vv = {v, v};
    for (Py_ssize_t i = 0; i < w; i += 2) {
        pair_d ee;
        memcpy(&ee, e + i, sizeof ee);
        acc += (ee <= vv); /* -1 where true */
    }
    return (Py_ssize_t)-(acc[0] + acc[1]);
}

static int view(Runner *self, PyObject *obj, Py_buffer *buf, const char *fmt, Py_ssize_t n,
                int writable, const char *name) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, buf, flags) < 0) return -1;
    self->n_views++;
    const char *f = buf->format ? buf->format : "B";
    if (f[0] == '<' || f[0] == '=' || f[0] == '@') f++;
    Py_ssize_t item = fmt[0] == 'f' ? 4 : 8;
    int fmt_ok = (fmt[0] == 'q') ? (f[0] == 'q' || f[0] == 'l') && buf->itemsize == 8
                                 : f[0] == fmt[0] && f[1] == '\0';
    if (!fmt_ok || buf->itemsize != item || (n >= 0 && buf->len != n * item)) {
        PyErr_Format(PyExc_ValueError, "Runner: %s must be %zd items of '%s'", name, n, fmt);
        return -1;
    }
    return 0;
}

static void release_views(Runner *self) {
    Py_buffer *all[] = {&self->b_staging, &self->b_refuse_lo, &self->b_refuse_hi,
                        &self->b_edges, &self->b_edge_off, &self->b_hist, &self->b_hist_off,
                        &self->b_count, &self->b_mean, &self->b_m2, &self->b_min,
                        &self->b_max, &self->b_lo, &self->b_hi, &self->b_oor,
                        &self->b_classes, &self->b_conf_edges, &self->b_conf,
                        &self->b_conf_sum, &self->b_lat_edges, &self->b_latency,
                        &self->b_tally, &self->b_typ_dirs, &self->b_typ_mean,
                        &self->b_typ_n, &self->b_typ_sum, &self->b_chan_index,
                        &self->b_chan_edges, &self->b_chan_edge_off, &self->b_chan_hist,
                        &self->b_chan_hist_off, &self->b_chan_lo, &self->b_chan_hi};
    for (int i = 0; i < self->n_views && i < (int)(sizeof all / sizeof all[0]); i++)
        PyBuffer_Release(all[i]);
    self->n_views = 0;
}

static int Runner_clear(Runner *self);
static PyObject *take_exception(void);
static void put_exception(PyObject *exc);

/* __init__'s work; on failure the caller clears whatever was set up. */
static int runner_setup(Runner *self, PyObject *args, PyObject *kwds) {
    static char *kw[] = {"model", "staging", "serve_lock", "monitor_lock", "record_error",
                         "error_type", "range_problem", "nan_problem", "result_type", "labels",
                         "version", "refuse_nan", "refuse_range", "refuse_lo", "refuse_hi",
                         "edges", "edge_off", "hist", "hist_off", "count", "mean", "m2", "vmin",
                         "vmax", "count_range", "moment_limit", "lo", "hi", "oor", "classes",
                         "conf_edges", "conf", "conf_sum", "lat_edges", "latency", "tally",
                         "typ_dirs", "typ_mean", "typ_n", "typ_sum", "sample_shape", "tensor",
                         "monitor_outputs", "chan_index", "n_channels", "chan_edges",
                         "chan_edge_off", "chan_hist", "chan_hist_off", "chan_range", "chan_lo",
                         "chan_hi", NULL};
    PyObject *model, *staging, *serve_lock, *monitor_lock, *record_error, *error_type,
        *range_problem, *nan_problem, *result_type, *labels, *version, *refuse_lo,
        *refuse_hi, *edges, *edge_off, *hist, *hist_off, *count, *mean, *m2, *vmin, *vmax,
        *lo, *hi, *oor, *classes, *conf_edges, *conf, *conf_sum, *lat_edges, *latency, *tally,
        *typ_dirs, *typ_mean, *typ_n, *typ_sum, *sample_shape, *chan_index, *chan_edges,
        *chan_edge_off, *chan_hist, *chan_hist_off, *chan_lo, *chan_hi;
    int refuse_nan, refuse_range, count_range, tensor, monitor_outputs, chan_range;
    Py_ssize_t n_channels;
    double moment_limit;
    if (!PyArg_ParseTupleAndKeywords(
            args, kwds, "$OOOOOOOOOOOppOOOOOOOOOOOpdOOOOOOOOOOOOOOOppOnOOOOpOO", kw, &model,
            &staging,
            &serve_lock, &monitor_lock, &record_error, &error_type, &range_problem,
            &nan_problem, &result_type, &labels, &version, &refuse_nan, &refuse_range,
            &refuse_lo, &refuse_hi, &edges, &edge_off, &hist, &hist_off, &count, &mean, &m2,
            &vmin, &vmax, &count_range, &moment_limit, &lo, &hi, &oor, &classes, &conf_edges,
            &conf, &conf_sum, &lat_edges, &latency, &tally, &typ_dirs, &typ_mean, &typ_n,
            &typ_sum, &sample_shape, &tensor, &monitor_outputs, &chan_index, &n_channels,
            &chan_edges, &chan_edge_off, &chan_hist, &chan_hist_off, &chan_range, &chan_lo,
            &chan_hi))
        return -1;
    PyObject *interp = PyObject_GetAttrString(model, "interpreter");
    if (interp == NULL) return -1;
    PyObject *in_index = PyObject_GetAttrString(model, "_in_index");
    PyObject *out_index = in_index ? PyObject_GetAttrString(model, "_out_index") : NULL;
    PyObject *n_features = out_index ? PyObject_GetAttrString(model, "n_features") : NULL;
    PyObject *n_classes = n_features ? PyObject_GetAttrString(model, "n_outputs") : NULL;
    if (n_classes == NULL) {
        Py_DECREF(interp);
        Py_XDECREF(in_index);
        Py_XDECREF(out_index);
        Py_XDECREF(n_features);
        return -1;
    }
    self->n_inputs = PyLong_AsSsize_t(n_features);
    self->n_classes = PyLong_AsSsize_t(n_classes);
    Py_DECREF(n_features);
    Py_DECREF(n_classes);
    self->interpreter = interp;
    self->in_index = in_index;
    self->out_index = out_index;
    if (PyErr_Occurred()) return -1;
    if (self->n_inputs < 1 || self->n_classes < 1) {
        PyErr_SetString(PyExc_ValueError, "Runner: the model needs features and outputs");
        return -1;
    }
    if (!PyTuple_Check(sample_shape) || PyTuple_GET_SIZE(sample_shape) < 1 ||
        PyTuple_GET_SIZE(sample_shape) > MAX_RANK) {
        PyErr_SetString(PyExc_ValueError, "Runner: sample_shape must be a tuple of 1 to 8 sizes");
        return -1;
    }
    self->rank = (int)PyTuple_GET_SIZE(sample_shape);
    Py_ssize_t size = 1;
    for (int d = 0; d < self->rank; d++) {
        self->shape[d] = PyLong_AsSsize_t(PyTuple_GET_ITEM(sample_shape, d));
        if (self->shape[d] < 1) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "Runner: sample sizes must be >= 1");
            return -1;
        }
        size *= self->shape[d];
    }
    if (size != self->n_inputs || (tensor && (n_channels < 1 || size % n_channels != 0))) {
        PyErr_SetString(PyExc_ValueError, "Runner: sample_shape does not fit the model");
        return -1;
    }
    self->tensor = tensor;
    self->monitor_outputs = monitor_outputs;
    self->chan_range = chan_range;
    self->n_channels = tensor ? n_channels : 0;
    self->positions = tensor ? size / n_channels : 0;
    self->n_features = (tensor ? 3 * self->n_channels : self->n_inputs) +
                       (monitor_outputs ? self->n_classes : 0);
    self->cap = RING;
    if (tensor && (1 << 16) / size < RING) self->cap = (1 << 16) / size > 1 ? (1 << 16) / size : 1;
    Py_INCREF(model);
    self->model = model;
    Py_INCREF(staging);
    self->staging = staging;
    if (!PyType_Check(result_type) ||
        !PyType_IsSubtype((PyTypeObject *)result_type, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "Runner: result_type must be a tuple type");
        return -1;
    }
    self->result_type = (PyTypeObject *)Py_NewRef(result_type);
    self->labels = Py_NewRef(labels);
    self->version = Py_NewRef(version);
    self->serve_acquire = PyObject_GetAttr(serve_lock, s_acquire);
    self->serve_release = PyObject_GetAttr(serve_lock, s_release);
    self->monitor_acquire = PyObject_GetAttr(monitor_lock, s_acquire);
    self->monitor_release = PyObject_GetAttr(monitor_lock, s_release);
    if (!self->serve_acquire || !self->serve_release || !self->monitor_acquire ||
        !self->monitor_release)
        return -1;
    Py_INCREF(record_error);
    self->record_error = record_error;
    Py_INCREF(error_type);
    self->error_type = error_type;
    Py_INCREF(range_problem);
    self->range_problem = range_problem;
    self->nan_problem = Py_NewRef(nan_problem);
    Py_INCREF(s_zero);
    self->subgraph = s_zero;
    self->refuse_nan = refuse_nan;
    self->refuse_range = refuse_range;
    self->count_range = count_range;
    self->moment_limit = moment_limit;
    Py_ssize_t f = self->n_features, c = self->n_classes, ni = self->n_inputs;
    Py_ssize_t nch = self->n_channels;
    if (view(self, staging, &self->b_staging, "f", ni, 1, "staging") < 0 ||
        view(self, refuse_lo, &self->b_refuse_lo, "d", ni, 0, "refuse_lo") < 0 ||
        view(self, refuse_hi, &self->b_refuse_hi, "d", ni, 0, "refuse_hi") < 0 ||
        view(self, edges, &self->b_edges, "d", -1, 0, "edges") < 0 ||
        view(self, edge_off, &self->b_edge_off, "q", f + 1, 0, "edge_off") < 0 ||
        view(self, hist, &self->b_hist, "q", -1, 1, "hist") < 0 ||
        view(self, hist_off, &self->b_hist_off, "q", f, 0, "hist_off") < 0 ||
        view(self, count, &self->b_count, "q", f, 1, "count") < 0 ||
        view(self, mean, &self->b_mean, "d", f, 1, "mean") < 0 ||
        view(self, m2, &self->b_m2, "d", f, 1, "m2") < 0 ||
        view(self, vmin, &self->b_min, "d", f, 1, "vmin") < 0 ||
        view(self, vmax, &self->b_max, "d", f, 1, "vmax") < 0 ||
        view(self, lo, &self->b_lo, "d", f, 0, "lo") < 0 ||
        view(self, hi, &self->b_hi, "d", f, 0, "hi") < 0 ||
        view(self, oor, &self->b_oor, "q", f, 1, "oor") < 0 ||
        view(self, classes, &self->b_classes, "q", c, 1, "classes") < 0 ||
        view(self, conf_edges, &self->b_conf_edges, "d", -1, 0, "conf_edges") < 0 ||
        view(self, conf, &self->b_conf, "q", -1, 1, "conf") < 0 ||
        view(self, conf_sum, &self->b_conf_sum, "d", -1, 1, "conf_sum") < 0 ||
        view(self, lat_edges, &self->b_lat_edges, "d", -1, 0, "lat_edges") < 0 ||
        view(self, latency, &self->b_latency, "q", -1, 1, "latency") < 0 ||
        view(self, tally, &self->b_tally, "q", 1, 1, "tally") < 0 ||
        view(self, typ_dirs, &self->b_typ_dirs, "d", -1, 0, "typ_dirs") < 0 ||
        view(self, typ_mean, &self->b_typ_mean, "d", f, 0, "typ_mean") < 0 ||
        view(self, typ_n, &self->b_typ_n, "q", 1, 1, "typ_n") < 0 ||
        view(self, typ_sum, &self->b_typ_sum, "d", 1, 1, "typ_sum") < 0 ||
        view(self, chan_index, &self->b_chan_index, "q", tensor ? ni : 0, 0, "chan_index") < 0 ||
        view(self, chan_edges, &self->b_chan_edges, "d", -1, 0, "chan_edges") < 0 ||
        view(self, chan_edge_off, &self->b_chan_edge_off, "q", -1, 0, "chan_edge_off") < 0 ||
        view(self, chan_hist, &self->b_chan_hist, "q", -1, 1, "chan_hist") < 0 ||
        view(self, chan_hist_off, &self->b_chan_hist_off, "q", -1, 0, "chan_hist_off") < 0 ||
        view(self, chan_lo, &self->b_chan_lo, "d", nch, 0, "chan_lo") < 0 ||
        view(self, chan_hi, &self->b_chan_hi, "d", nch, 0, "chan_hi") < 0)
        return -1;
    {   /* where each channel's values sit in a sample, and the channel bins */
        const long long *ix = self->b_chan_index.buf;
        const Py_ssize_t np_ = self->positions;
        for (Py_ssize_t i = 0; i < self->b_chan_index.len / 8; i++)
            if (ix[i] != (i % np_) * nch + i / np_) { /* channel i / np_, position i % np_ */
                PyErr_SetString(PyExc_ValueError,
                                "Runner: the native path counts channels-last tensors only");
                return -1;
            }
        Py_ssize_t n_off = self->b_chan_edge_off.len / 8;
        self->n_chan_bins = n_off - 1;
        if (n_off < 1 || (self->n_chan_bins != 0 && self->n_chan_bins != nch) ||
            self->b_chan_hist_off.len / 8 != self->n_chan_bins) {
            PyErr_SetString(PyExc_ValueError, "Runner: channel bins do not fit the channels");
            return -1;
        }
        const long long *ceo = self->b_chan_edge_off.buf, *cho = self->b_chan_hist_off.buf;
        const double *ce = self->b_chan_edges.buf;
        Py_ssize_t n_ce = self->b_chan_edges.len / 8, n_ch = self->b_chan_hist.len / 8;
        Py_ssize_t widest = 1;
        if (ceo[0] != 0) {
            PyErr_SetString(PyExc_ValueError, "Runner: bad channel edge offsets");
            return -1;
        }
        for (Py_ssize_t j = 0; j < self->n_chan_bins; j++) {
            long long ne = ceo[j + 1] - ceo[j];
            if (ne < 2 || ceo[j + 1] > n_ce || cho[j] < 0 || cho[j] + ne + 2 > n_ch) {
                PyErr_Format(PyExc_ValueError, "Runner: bad channel bin offsets at channel %zd",
                             j);
                return -1;
            }
            if (ne > widest) widest = (Py_ssize_t)ne;
        }
        self->chan_thr = PyMem_Malloc((size_t)(n_ce ? n_ce : 1) * sizeof(float));
        self->chan_ge = PyMem_Malloc((size_t)widest * sizeof(long long));
        if (!self->chan_thr || !self->chan_ge) {
            PyErr_NoMemory();
            return -1;
        }
        for (Py_ssize_t j = 0; j < self->n_chan_bins; j++) {
            Py_ssize_t k = (Py_ssize_t)(ceo[j + 1] - ceo[j]) - 1;
            for (Py_ssize_t i = 0; i <= k; i++) {
                double e = ce[ceo[j] + i];
                float t = (float)e;
                if (i < k) { /* the least float32 >= e */
                    if ((double)t < e) t = nextafterf(t, HUGE_VALF);
                } else if (isinf(e) && e > 0) { /* nothing is above +inf */
                    t = NAN;
                } else if ((double)t <= e) { /* the least float32 > e */
                    t = nextafterf(t, HUGE_VALF);
                }
                self->chan_thr[ceo[j] + i] = t;
            }
        }
    }
    if ((self->b_typ_dirs.len / 8) % f != 0) {
        PyErr_SetString(PyExc_ValueError, "Runner: typ_dirs must be [k, features]");
        return -1;
    }
    self->typ_k = (self->b_typ_dirs.len / 8) / f;
    /* Every offset must stay inside the arrays it indexes. */
    const long long *eo = self->b_edge_off.buf, *ho = self->b_hist_off.buf;
    Py_ssize_t n_edges = self->b_edges.len / 8, n_hist = self->b_hist.len / 8;
    for (Py_ssize_t j = 0; j < f; j++) {
        long long ne = eo[j + 1] - eo[j];
        if (eo[j] < 0 || ne < 2 || eo[j + 1] > n_edges || ho[j] < 0 || ho[j] + ne + 2 > n_hist) {
            PyErr_Format(PyExc_ValueError, "Runner: bad edge/histogram offsets at feature %zd", j);
            return -1;
        }
    }
    Py_ssize_t total = 0;
    for (Py_ssize_t j = 0; j < f; j++) total += (eo[j + 1] - eo[j] + 1) & ~1LL;
    self->padded = PyMem_Malloc((size_t)(total ? total : 1) * sizeof(double));
    self->padded_off = PyMem_Malloc((size_t)(f + 1) * sizeof(Py_ssize_t));
    self->last = PyMem_Malloc((size_t)f * sizeof(Py_ssize_t));
    if (!self->padded || !self->padded_off || !self->last) {
        PyErr_NoMemory();
        return -1;
    }
    const double *edge_values = self->b_edges.buf;
    Py_ssize_t at = 0;
    for (Py_ssize_t j = 0; j < f; j++) {
        Py_ssize_t ne = (Py_ssize_t)(eo[j + 1] - eo[j]), w = (ne + 1) & ~(Py_ssize_t)1;
        self->padded_off[j] = at;
        self->last[j] = ne - 1;
        for (Py_ssize_t i = 0; i < w; i++)
            self->padded[at + i] = i < ne ? edge_values[eo[j] + i] : Py_HUGE_VAL;
        at += w;
    }
    self->padded_off[f] = at;
    const Py_ssize_t cap = self->cap;
    self->ring = PyMem_Malloc((size_t)(cap * f) * sizeof(double));
    self->ring_top = PyMem_Malloc((size_t)cap * sizeof(double));
    self->ring_latency = PyMem_Malloc((size_t)cap * sizeof(double));
    self->ring_best = PyMem_Malloc((size_t)cap * sizeof(Py_ssize_t));
    if (self->n_chan_bins) {
        self->ring_ch = PyMem_Malloc((size_t)(cap * ni) * sizeof(float));
        if (!self->ring_ch) {
            PyErr_NoMemory();
            return -1;
        }
    }
    self->pending = 0;
    if (!self->ring || !self->ring_top || !self->ring_latency || !self->ring_best) {
        PyErr_NoMemory();
        return -1;
    }
    if (self->b_conf_edges.len / 8 < 2 || self->b_conf.len != self->b_conf_edges.len + 16 ||
        self->b_conf_sum.len != self->b_conf.len ||
        self->b_lat_edges.len / 8 < 2 || self->b_latency.len != self->b_lat_edges.len + 16) {
        PyErr_SetString(PyExc_ValueError, "Runner: confidence/latency counts do not fit edges");
        return -1;
    }
    return 0;
}

static int Runner_init(Runner *self, PyObject *args, PyObject *kwds) {
    if (self->ready) {
        PyErr_SetString(PyExc_RuntimeError, "Runner: already initialised");
        return -1;
    }
    Runner_clear(self); /* what an earlier, failed __init__ left */
    if (runner_setup(self, args, kwds) < 0) {
        PyObject *exc = take_exception();
        Runner_clear(self);
        if (exc != NULL) put_exception(exc);
        return -1;
    }
    self->ready = 1;
    return 0;
}

static int Runner_traverse(Runner *self, visitproc visit, void *arg) {
    Py_VISIT(self->model);
    Py_VISIT(self->interpreter);
    Py_VISIT(self->staging);
    Py_VISIT(self->serve_acquire);
    Py_VISIT(self->serve_release);
    Py_VISIT(self->monitor_acquire);
    Py_VISIT(self->monitor_release);
    Py_VISIT(self->result_type);
    Py_VISIT(self->labels);
    Py_VISIT(self->version);
    Py_VISIT(self->record_error);
    Py_VISIT(self->error_type);
    Py_VISIT(self->range_problem);
    Py_VISIT(self->nan_problem);
    return 0;
}

static int Runner_clear(Runner *self) {
    self->ready = 0;
    release_views(self);
    PyMem_Free(self->padded);
    PyMem_Free(self->padded_off);
    PyMem_Free(self->last);
    self->padded = NULL;
    self->padded_off = self->last = NULL;
    PyMem_Free(self->ring);
    PyMem_Free(self->ring_ch);
    PyMem_Free(self->chan_thr);
    PyMem_Free(self->chan_ge);
    self->ring_ch = NULL;
    self->chan_thr = NULL;
    self->chan_ge = NULL;
    PyMem_Free(self->ring_top);
    PyMem_Free(self->ring_latency);
    PyMem_Free(self->ring_best);
    self->ring = NULL;
    self->ring_top = self->ring_latency = NULL;
    self->ring_best = NULL;
    self->pending = 0;
    Py_CLEAR(self->model);
    Py_CLEAR(self->interpreter);
    Py_CLEAR(self->in_index);
    Py_CLEAR(self->out_index);
    Py_CLEAR(self->subgraph);
    Py_CLEAR(self->staging);
    Py_CLEAR(self->serve_acquire);
    Py_CLEAR(self->serve_release);
    Py_CLEAR(self->monitor_acquire);
    Py_CLEAR(self->monitor_release);
    Py_CLEAR(self->result_type);
    Py_CLEAR(self->labels);
    Py_CLEAR(self->version);
    Py_CLEAR(self->record_error);
    Py_CLEAR(self->error_type);
    Py_CLEAR(self->range_problem);
    Py_CLEAR(self->nan_problem);
    return 0;
}

static void Runner_dealloc(Runner *self) {
    PyObject_GC_UnTrack(self);
    if (self->weakreflist != NULL) PyObject_ClearWeakRefs((PyObject *)self);
    Runner_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int call_lock(PyObject *method) {
    PyObject *r = PyObject_CallNoArgs(method);
    if (r == NULL) return -1;
    Py_DECREF(r);
    return 0;
}

/* The pending exception as one normalised object (NULL if none); clears it. */
static PyObject *take_exception(void) {
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (type == NULL) return NULL;
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL) PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
}

/* Raise ``exc`` again (steals the reference). */
static void put_exception(PyObject *exc) {
    PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), exc, PyException_GetTraceback(exc));
}

/* Count one error of ``kind`` and, with ``probation``, one failed prediction; then
 * raise the agent's PredictionError(message), caused by ``cause`` if not NULL.
 * Steals ``message`` and ``cause``. Always returns NULL. */
static PyObject *fail(Runner *self, PyObject *kind, PyObject *probation, PyObject *message,
                      PyObject *cause) {
    if (message == NULL) {
        Py_XDECREF(cause);
        return NULL;
    }
    PyObject *r = PyObject_CallOneArg(self->record_error, kind);
    if (r != NULL && probation != Py_None) {
        Py_DECREF(r);
        r = PyObject_CallMethodObjArgs(probation, s_observe, s_zero, s_one, NULL);
    }
    if (r == NULL) { /* the bookkeeping failed: that is what the caller hears */
        Py_DECREF(message);
        Py_XDECREF(cause);
        return NULL;
    }
    Py_DECREF(r);
    PyErr_SetObject(self->error_type, message);
    Py_DECREF(message);
    if (cause != NULL) { /* as ``raise ... from cause`` */
        PyObject *err = take_exception();
        PyException_SetContext(err, Py_NewRef(cause)); /* steals a reference */
        PyException_SetCause(err, cause);              /* steals cause */
        put_exception(err);
    }
    return NULL;
}

static inline double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Run the staged sample; returns the output array, or NULL with an exception set. */
static PyObject *invoke(Runner *self, double *latency) {
    double start = now_s();
    PyObject *out = NULL, *raw = PyObject_GetAttr(self->interpreter, s_interpreter);
    if (raw == NULL) return NULL;
    PyObject *set_args[] = {raw, self->in_index, self->staging};
    PyObject *r = PyObject_VectorcallMethod(s_set, set_args, 3, NULL);
    if (r != NULL) {
        Py_DECREF(r);
        PyObject *invoke_args[] = {raw};
        r = PyObject_VectorcallMethod(s_invoke, invoke_args, 1, NULL);
    }
    if (r != NULL) {
        Py_DECREF(r);
        PyObject *get_args[] = {raw, self->out_index, self->subgraph};
        out = PyObject_VectorcallMethod(s_get, get_args, 3, NULL);
    }
    Py_DECREF(raw);
    *latency = now_s() - start;
    return out;
}

/* Where the compiler and the CPU have them, the counting loops below use wider vector
 * units (chosen once, at load time). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define WIDE_VECTORS __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define WIDE_VECTORS
#endif

/* ge[i] = how many of v[0..n-1] are >= t[i] (i < nt), none of the NaNs; returns how
 * many are NaN (0 without looking when ``no_nan``: the schema refused them). Vectorised
 * by the compiler (int counters over chunks of 2^24). */
WIDE_VECTORS
static long long count_at_least(const float *v, Py_ssize_t n, const float *t, Py_ssize_t nt,
                                long long *ge, int no_nan) {
    const Py_ssize_t chunk = (Py_ssize_t)1 << 24;
    long long nan = 0;
    for (Py_ssize_t i = 0; i < nt; i++) ge[i] = 0;
    for (Py_ssize_t a = 0; a < n; a += chunk) {
        const Py_ssize_t b = n - a < chunk ? n - a : chunk;
        const float *w = v + a;
        int c = 0;
        if (!no_nan)
            for (Py_ssize_t j = 0; j < b; j++) c += w[j] != w[j];
        nan += c;
        for (Py_ssize_t i = 0; i < nt; i++) {
            const float ti = t[i];
            c = 0;
            for (Py_ssize_t j = 0; j < b; j++) c += w[j] >= ti;
            ge[i] += c;
        }
    }
    return nan;
}

/* The per-channel value histograms of the m buffered tensor samples: bin i (1..k-1)
 * holds the values >= e[i-1] and < e[i], so its count is the difference of two
 * "at least" counts; bin 0 the values below e[0], bin k those in [e[k-1], e[k]]
 * (closed), k + 1 those above e[k], k + 2 the NaNs (as bin_of). */
static void fold_channels(Runner *self, Py_ssize_t m) {
    const long long *ceo = self->b_chan_edge_off.buf, *cho = self->b_chan_hist_off.buf;
    long long *hist = self->b_chan_hist.buf, *ge = self->chan_ge;
    const Py_ssize_t n = m * self->positions;
    for (Py_ssize_t c = 0; c < self->n_chan_bins; c++) {
        const float *v = self->ring_ch + c * self->cap * self->positions;
        const float *thr = self->chan_thr + ceo[c];
        const Py_ssize_t k = (Py_ssize_t)(ceo[c + 1] - ceo[c]) - 1;
        long long *h = hist + cho[c];
        const long long nan = count_at_least(v, n, thr, k + 1, ge, self->refuse_nan);
        h[0] += (n - nan) - ge[0];
        for (Py_ssize_t i = 1; i <= k; i++) h[i] += ge[i - 1] - ge[i];
        h[k + 1] += ge[k];
        h[k + 2] += nan;
    }
}

/* Fold the buffered samples into the window (the monitor lock is held): per feature,
 * the bins, the block's count/mean/M2/min/max merged by Chan's formula (as the Python
 * fold does), range misses; then classes, confidence and latency. */
static void fold_ring(Runner *self) {
    const Py_ssize_t m = self->pending, nf = self->n_features;
    if (m == 0) return;
    const double *lo = self->b_lo.buf, *hi = self->b_hi.buf, *padded = self->padded;
    const Py_ssize_t *po = self->padded_off, *last = self->last;
    const long long *ho = self->b_hist_off.buf;
    long long *hist = self->b_hist.buf, *count = self->b_count.buf, *oor = self->b_oor.buf;
    double *mean = self->b_mean.buf, *m2 = self->b_m2.buf;
    double *vmin = self->b_min.buf, *vmax = self->b_max.buf;
    const double *ring = self->ring;
    const double limit = self->moment_limit;
    for (Py_ssize_t j = 0; j < nf; j++) {
        const double *e = padded + po[j];
        const Py_ssize_t k = last[j], w = po[j + 1] - po[j];
        long long *h = hist + ho[j];
        long long c = 0, misses = 0;
        double sum = 0.0, bmin = Py_HUGE_VAL, bmax = -Py_HUGE_VAL;
        for (Py_ssize_t s = 0; s < m; s++) {
            double v = ring[s * nf + j];
            h[bin_pairs(e, k, w, v)]++;
            if (fabs(v) <= limit) { /* false for NaN */
                c++;
                sum += v;
                bmin = v < bmin ? v : bmin;
                bmax = v > bmax ? v : bmax;
            }
            misses += v < lo[j] || v > hi[j];
        }
        if (self->count_range) oor[j] += misses;
        if (c == 0) continue;
        double block_mean = sum / (double)c, block_m2 = 0.0;
        for (Py_ssize_t s = 0; s < m; s++) {
            double v = ring[s * nf + j];
            if (fabs(v) <= limit) block_m2 += (v - block_mean) * (v - block_mean);
        }
        long long n_a = count[j], total = n_a + c;
        double delta = block_mean - mean[j];
        mean[j] = n_a == 0 ? block_mean : mean[j] + delta * (double)c / (double)total;
        m2[j] += block_m2 + delta * delta * (double)n_a * (double)c / (double)total;
        count[j] = total;
        if (bmin < vmin[j]) vmin[j] = bmin;
        if (bmax > vmax[j]) vmax[j] = bmax;
    }
    if (self->typ_k > 0) { /* as WindowAccumulator._fold_typicality */
        const double *dirs = self->b_typ_dirs.buf, *centre = self->b_typ_mean.buf;
        long long tn = 0;
        double ts = 0.0;
        for (Py_ssize_t s = 0; s < m; s++) {
            const double *row = ring + s * nf;
            int finite = 1;
            for (Py_ssize_t j = 0; j < nf; j++) finite &= isfinite(row[j]) != 0;
            if (!finite) continue;
            double energy = 0.0;
            for (Py_ssize_t i = 0; i < self->typ_k; i++) {
                const double *d = dirs + i * nf;
                double z = 0.0;
                for (Py_ssize_t j = 0; j < nf; j++) z += d[j] * ((double)row[j] - centre[j]);
                energy += z * z;
            }
            if (isfinite(energy)) {
                tn++;
                ts += energy;
            }
        }
        ((long long *)self->b_typ_n.buf)[0] += tn;
        ((double *)self->b_typ_sum.buf)[0] += ts;
    }
    if (self->n_chan_bins) fold_channels(self, m);
    long long *classes = self->b_classes.buf, *conf = self->b_conf.buf;
    long long *latency = self->b_latency.buf;
    double *conf_sum = self->b_conf_sum.buf;
    const double *conf_edges = self->b_conf_edges.buf, *lat_edges = self->b_lat_edges.buf;
    const Py_ssize_t n_conf = self->b_conf_edges.len / 8, n_lat = self->b_lat_edges.len / 8;
    for (Py_ssize_t s = 0; s < m; s++) {
        const double top = self->ring_top[s];
        const Py_ssize_t cb = bin_of(conf_edges, n_conf, top);
        if (self->ring_best[s] >= 0) classes[self->ring_best[s]]++; /* none for a NaN row */
        conf[cb]++;
        if (isfinite(top)) conf_sum[cb] += top;
        latency[bin_of(lat_edges, n_lat, self->ring_latency[s] * 1000.0)]++;
    }
    self->pending = 0;
}

/* Everything after the serving lock is taken; the caller releases it. */
/* Copy the sample (float32 or float64, any strides; its last ``rank`` dimensions are
 * the sample's) into x, float32 in C order: float64 rounded as NumPy's astype does. */
static void copy_sample(const Runner *self, const Py_buffer *in, float *x) {
    const Py_ssize_t n = self->n_inputs;
    const char *src = in->buf;
    if (PyBuffer_IsContiguous(in, 'C')) {
        if (in->itemsize == 4) {
            memcpy(x, src, (size_t)n * 4);
        } else {
            for (Py_ssize_t j = 0; j < n; j++) {
                double v;
                memcpy(&v, src + j * 8, 8);
                x[j] = (float)v;
            }
        }
        return;
    }
    const int rank = self->rank, skip = in->ndim - rank;
    const Py_ssize_t *strides = in->strides + skip;
    Py_ssize_t at[MAX_RANK] = {0};
    Py_ssize_t offset = 0; /* bytes of the current index */
    for (Py_ssize_t j = 0; j < n; j++) {
        if (in->itemsize == 8) {
            double v;
            memcpy(&v, src + offset, 8);
            x[j] = (float)v;
        } else {
            memcpy(x + j, src + offset, 4);
        }
        for (int d = rank - 1; d >= 0; d--) { /* the next index, last dimension first */
            offset += strides[d];
            if (++at[d] < self->shape[d]) break;
            offset -= strides[d] * at[d];
            at[d] = 0;
        }
    }
}

/* Channels c0 .. c0+g-1 of a channels-last sample x [positions, nch]: the sums of
 * their values and of their squares, each summed position by position (g chains at
 * once, each in NumPy's order); with dst, their values copied channel by channel
 * (channel c0 + i at dst + i * stride). g is a constant where it is inlined. */
static inline __attribute__((always_inline)) void channel_sums(
    const float *x, Py_ssize_t np_, Py_ssize_t nch, Py_ssize_t c0, int g, float *dst,
    Py_ssize_t stride, double *sum, double *squares) {
    double s[4] = {0.0, 0.0, 0.0, 0.0}, sq[4] = {0.0, 0.0, 0.0, 0.0};
    const float *at = x + c0;
    if (dst != NULL) {
        for (Py_ssize_t q = 0; q < np_; q++, at += nch) {
            for (int i = 0; i < g; i++) {
                const double v = at[i];
                s[i] += v;
                sq[i] += v * v;
                dst[i * stride + q] = at[i];
            }
        }
    } else {
        for (Py_ssize_t q = 0; q < np_; q++, at += nch) {
            for (int i = 0; i < g; i++) {
                const double v = at[i];
                s[i] += v;
                sq[i] += v * v;
            }
        }
    }
    for (int i = 0; i < g; i++) {
        sum[i] = s[i];
        squares[i] = sq[i];
    }
}

/* The window's row for a sample x (the monitor lock is held): the sample itself, or a
 * tensor's per-channel summaries (also buffering its values channel by channel for the
 * value histograms, and counting range misses); then the outputs p if monitored. */
static void buffer_row(Runner *self, const float *x, const float *p, Py_ssize_t at) {
    double *row = self->ring + at * self->n_features;
    Py_ssize_t j = 0;
    if (self->tensor) {
        const Py_ssize_t np_ = self->positions, nch = self->n_channels;
        const double *clo = self->b_chan_lo.buf, *chi = self->b_chan_hi.buf;
        long long *oor = self->b_oor.buf;
        const Py_ssize_t stride = self->cap * np_; /* from one channel's values to the next */
        for (Py_ssize_t c0 = 0; c0 < nch; c0 += 4) { /* up to 4 channels at a time */
            double sum[4], squares[4];
            float *dst = self->ring_ch ? self->ring_ch + c0 * stride + at * np_ : NULL;
            switch (nch - c0 < 4 ? nch - c0 : 4) {
            case 1: channel_sums(x, np_, nch, c0, 1, dst, stride, sum, squares); break;
            case 2: channel_sums(x, np_, nch, c0, 2, dst, stride, sum, squares); break;
            case 3: channel_sums(x, np_, nch, c0, 3, dst, stride, sum, squares); break;
            default: channel_sums(x, np_, nch, c0, 4, dst, stride, sum, squares); break;
            }
            for (Py_ssize_t c = c0; c < nch && c < c0 + 4; c++, j += 3) {
                /* as InputSchema.summarize: std = sqrt(max(energy - mean^2, 0)), NaN kept */
                const double mean = sum[c - c0] / (double)np_;
                const double energy = squares[c - c0] / (double)np_;
                const double var = energy - mean * mean;
                row[j] = mean;
                row[j + 1] = sqrt(var > 0.0 || isnan(var) ? var : 0.0);
                row[j + 2] = energy;
            }
        }
        if (self->chan_range) {
            for (Py_ssize_t c = 0; c < nch; c++) {
                const double lo = clo[c], hi = chi[c];
                int miss = 0;
                for (Py_ssize_t q = 0; q < np_; q++) {
                    const double v = x[q * nch + c];
                    miss |= v < lo || v > hi;
                }
                if (miss) {
                    oor[3 * c]++;
                    oor[3 * c + 1]++;
                    oor[3 * c + 2]++;
                }
            }
        }
    } else {
        for (; j < self->n_inputs; j++) row[j] = x[j];
    }
    if (self->monitor_outputs)
        for (Py_ssize_t c = 0; c < self->n_classes; c++) row[j + c] = p[c];
}

static PyObject *predict_locked(Runner *self, Py_buffer *in, PyObject *probation) {
    const Py_ssize_t nf = self->n_inputs, nc = self->n_classes;
    float *x = self->b_staging.buf;
    copy_sample(self, in, x);
    if (self->refuse_nan) {
        int any_nan = 0;
        for (Py_ssize_t j = 0; j < nf; j++) any_nan |= x[j] != x[j]; /* vectorised */
        if (any_nan)
            return fail(self, s_invalid, Py_None,
                        PyObject_CallOneArg(self->nan_problem, self->staging), NULL);
    }
    if (self->refuse_range) {
        const double *lo = self->b_refuse_lo.buf, *hi = self->b_refuse_hi.buf;
        for (Py_ssize_t j = 0; j < nf; j++)
            if ((double)x[j] < lo[j] || (double)x[j] > hi[j])
                return fail(self, s_invalid, Py_None,
                            PyObject_CallOneArg(self->range_problem, self->staging), NULL);
    }
    double latency = 0.0;
    PyObject *out = invoke(self, &latency);
    if (out == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_RuntimeError) &&
            !PyErr_ExceptionMatches(PyExc_ValueError))
            return NULL;
        PyObject *cause = take_exception();
        return fail(self, s_invoke_error, probation,
                    PyUnicode_FromFormat("the model failed: %S", cause), cause);
    }
    Py_buffer ob;
    if (PyObject_GetBuffer(out, &ob, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        Py_DECREF(out);
        return NULL;
    }
    const char *of = ob.format ? ob.format : "B";
    if (of[0] == '<' || of[0] == '=' || of[0] == '@') of++;
    if (ob.itemsize != 4 || of[0] != 'f' || ob.len != nc * 4) {
        PyBuffer_Release(&ob);
        Py_DECREF(out);
        PyErr_SetString(PyExc_RuntimeError, "Runner: the output is not float32 [1, C]");
        return NULL;
    }
    /* As the Python fold: the top-1 confidence is the row's maximum (NaN if any value
     * is NaN, then no predicted class), the class the first index holding it. */
    const float *p = ob.buf; /* valid while out is alive */
    Py_ssize_t best = 0;
    double top = p[0];
    int finite = 1, any_nan = 0;
    for (Py_ssize_t c = 0; c < nc; c++) {
        double v = p[c];
        if (!isfinite(v)) finite = 0;
        if (isnan(v)) any_nan = 1;
        else if (v > top || isnan(top)) { top = v; best = c; }
    }
    PyBuffer_Release(&ob);
    if (any_nan) {
        best = -1;
        top = Py_NAN;
    }
    if (call_lock(self->monitor_acquire) < 0) {
        Py_DECREF(out);
        return NULL;
    }
    Py_ssize_t at = self->pending;
    buffer_row(self, x, p, at);
    self->ring_best[at] = best;
    self->ring_top[at] = top;
    self->ring_latency[at] = latency;
    self->pending = at + 1;
    ((long long *)self->b_tally.buf)[0]++;
    if (self->pending == self->cap) fold_ring(self);
    if (call_lock(self->monitor_release) < 0) {
        Py_DECREF(out);
        return NULL;
    }
    if (!finite) { /* counted above (inputs, NaN confidence); the caller gets an error */
        Py_DECREF(out);
        return fail(self, s_nan_output, probation,
                    PyUnicode_FromString("the model returned NaN or infinity"), NULL);
    }
    if (probation != Py_None) {
        PyObject *lat = PyFloat_FromDouble(latency);
        PyObject *r = lat ? PyObject_CallMethodObjArgs(probation, s_observe, s_one, s_zero, lat,
                                                       NULL)
                          : NULL;
        Py_XDECREF(lat);
        if (r == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(r);
    }
    return out;
}

/* Runner(inputs, probation=None) -> result_type(outputs [1, C], labels, version), or
 * None when inputs are not a float32/float64 buffer of the sample's shape (for a tensor
 * also [1, *sample_shape]) or the model's batch is not 1 (the general path handles
 * those). */
static PyObject *Runner_call(Runner *self, PyObject *args, PyObject *kwds) {
    PyObject *inputs, *probation = Py_None;
    if (!PyArg_UnpackTuple(args, "Runner", 1, 2, &inputs, &probation)) return NULL;
    if (kwds != NULL && PyDict_GET_SIZE(kwds)) {
        PyErr_SetString(PyExc_TypeError, "Runner: no keyword arguments");
        return NULL;
    }
    if (!self->ready) {
        PyErr_SetString(PyExc_RuntimeError, "Runner: not initialised");
        return NULL;
    }
    Py_buffer in;
    if (PyObject_GetBuffer(inputs, &in, PyBUF_RECORDS_RO) < 0) {
        if (!PyErr_ExceptionMatches(PyExc_TypeError) &&
            !PyErr_ExceptionMatches(PyExc_BufferError) &&
            !PyErr_ExceptionMatches(PyExc_ValueError))
            return NULL;
        PyErr_Clear(); /* not a buffer (a list, say): the general path converts it */
        Py_RETURN_NONE;
    }
    const char *f = in.format ? in.format : "B";
    if (f[0] == '<' || f[0] == '=' || f[0] == '@') f++;
    int is_float = (f[0] == 'f' && in.itemsize == 4) || (f[0] == 'd' && in.itemsize == 8);
    /* [*sample_shape], or for a tensor [1, *sample_shape] */
    const int skip = in.ndim - self->rank;
    int fits = is_float && f[1] == '\0' &&
               (skip == 0 || (skip == 1 && self->tensor && in.shape[0] == 1));
    for (int d = 0; fits && d < self->rank; d++) fits = in.shape[skip + d] == self->shape[d];
    if (!fits) {
        PyBuffer_Release(&in);
        Py_RETURN_NONE;
    }
    if (call_lock(self->serve_acquire) < 0) {
        PyBuffer_Release(&in);
        return NULL;
    }
    /* Under the lock: the general path resizes the interpreter under it too. */
    PyObject *batch = PyObject_GetAttr(self->model, s_batch);
    int single = batch != NULL &&
                 (batch == s_one || PyObject_RichCompareBool(batch, s_one, Py_EQ) == 1);
    Py_XDECREF(batch);
    PyObject *out = single ? predict_locked(self, &in, probation) : NULL;
    PyBuffer_Release(&in);
    PyObject *exc = PyErr_Occurred() ? take_exception() : NULL;
    if (call_lock(self->serve_release) < 0) {
        Py_XDECREF(exc);
        Py_XDECREF(out);
        return NULL;
    }
    if (exc != NULL) {
        put_exception(exc);
        return NULL;
    }
    if (out == NULL) Py_RETURN_NONE; /* batch not 1: the general path resizes it first */
    PyObject *result = self->result_type->tp_alloc(self->result_type, 4);
    PyObject *no_errors = result ? PyTuple_New(0) : NULL;
    if (no_errors == NULL) {
        Py_XDECREF(result);
        Py_DECREF(out);
        return NULL;
    }
    PyTuple_SET_ITEM(result, 0, out); /* steals out */
    PyTuple_SET_ITEM(result, 1, Py_NewRef(self->labels));
    PyTuple_SET_ITEM(result, 2, Py_NewRef(self->version));
    PyTuple_SET_ITEM(result, 3, no_errors);
    return result;
}

static PyObject *Runner_drain(Runner *self, PyObject *Py_UNUSED(ignored)) {
    if (self->ready) fold_ring(self);
    Py_RETURN_NONE;
}

static PyMethodDef Runner_methods[] = {
    {"drain", (PyCFunction)Runner_drain, METH_NOARGS,
     PyDoc_STR("drain(): fold the buffered samples into the window's arrays. The caller "
               "holds the monitor lock.")},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject RunnerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "edge_agent.inference._hotpath.Runner",
    .tp_doc = PyDoc_STR("Runner(**arrays)(inputs, probation=None): one monitored prediction."),
    .tp_basicsize = sizeof(Runner),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_weaklistoffset = offsetof(Runner, weakreflist),
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Runner_init,
    .tp_dealloc = (destructor)Runner_dealloc,
    .tp_traverse = (traverseproc)Runner_traverse,
    .tp_clear = (inquiry)Runner_clear,
    .tp_call = (ternaryfunc)Runner_call,
    .tp_methods = Runner_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_hotpath",
    "Native one-sample prediction with monitoring (see edge_agent/inference/hotpath.py).", -1, NULL,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__hotpath(void) {
    struct { PyObject **slot; const char *text; } names[] = {
        {&s_interpreter, "_interpreter"}, {&s_batch, "_batch"}, {&s_set, "SetTensor"},
        {&s_invoke, "Invoke"}, {&s_get, "GetTensor"}, {&s_acquire, "acquire"},
        {&s_release, "release"}, {&s_observe, "observe"}, {&s_invalid, "invalid_input"},
        {&s_invoke_error, "invoke_error"}, {&s_nan_output, "nan_output"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        *names[i].slot = PyUnicode_InternFromString(names[i].text);
        if (*names[i].slot == NULL) return NULL;
    }
    s_one = PyLong_FromLong(1);
    s_zero = PyLong_FromLong(0);
    if (s_one == NULL || s_zero == NULL) return NULL;
    if (PyType_Ready(&RunnerType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddObjectRef(m, "Runner", (PyObject *)&RunnerType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
