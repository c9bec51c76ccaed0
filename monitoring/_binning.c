/* Drift binning in one pass: each value of a served batch goes to its bin's slot in a count vector.

   The numpy path (monitoring/drift.py) makes a dozen passes over every chunk of rows (stack, transpose,
   one comparison and one add per edge, offsets, NaN check, bincount), each streaming the chunk through
   the cache: about 170 cache misses and 6,600 instructions per request in the benchmark (32 features),
   ~5% of a request's CPU. Here each value is read once while the batch is still in cache, compared
   against its column's edges in registers, and counted.

   Semantics are the numpy path's: with interior edges e_1 < ... < e_k of a column, value x goes to bin
   #{j : x >= e_j} (left-closed bins, as np.searchsorted(edges, x, side="right")); NaN goes to the column's
   missing slot.

   Only the CPython buffer protocol is used (no numpy headers): building needs nothing but a C compiler,
   and without one the gateway uses the numpy path (monitoring/drift.py checks which). */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define MAX_OUTPUTS 16

static int
format_is(const Py_buffer *view, char code)
{
    const char *f = view->format;
    if (f == NULL)
        return code == 'B';
    if (*f == '<' || *f == '=' || *f == '@')
        f++;
    return f[0] == code && f[1] == '\0';
}

/* A float32/float64 C-contiguous buffer of `rows` rows and `k` columns (1-D counts as one column). */
static int
get_matrix(PyObject *obj, Py_buffer *view, Py_ssize_t *rows, Py_ssize_t *k, int *is_float)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        return -1;
    *is_float = format_is(view, 'f');
    if ((!*is_float && !format_is(view, 'd')) || view->ndim < 1 || view->ndim > 2) {
        PyErr_SetString(PyExc_TypeError, "bin_batch: arrays must be 1-D or 2-D float32 or float64");
        return -1;
    }
    *rows = view->shape[0];
    *k = view->ndim == 2 ? view->shape[1] : 1;
    return 0;
}

/* Edges are padded with +inf to WIDTH per column, so the compare-and-add over one value's edges has a
   fixed trip count that the compiler turns into a few SIMD compares and a sum, with no branch (which
   bin a value falls in is unpredictable, so branching on it would mispredict). The count is clamped to
   the column's real edges so that x = +inf stays in the last bin. A float32 matrix is compared against
   float32 edges rounded up (x >= e exactly when x >= the smallest float32 >= e, for float32 x). */
#define WIDTH 16

/* GCC/Clang vector extensions: a comparison gives -1 in each lane where it holds. */
typedef float v4sf __attribute__((vector_size(16)));
typedef int32_t v4si __attribute__((vector_size(16)));
typedef double v2df __attribute__((vector_size(16)));
typedef int64_t v2di __attribute__((vector_size(16)));

static inline int32_t
bin_f32(float x, const float *e)
{
    v4sf v = {x, x, x, x}, edge;
    v4si sum = {0, 0, 0, 0};
    for (int i = 0; i < WIDTH; i += 4) {
        __builtin_memcpy(&edge, e + i, sizeof edge);
        sum += (v >= edge);
    }
    return -(sum[0] + sum[1] + sum[2] + sum[3]);
}

static inline int32_t
bin_f64(double x, const double *e)
{
    v2df v = {x, x}, edge;
    v2di sum = {0, 0};
    for (int i = 0; i < WIDTH; i += 2) {
        __builtin_memcpy(&edge, e + i, sizeof edge);
        sum += (v >= edge);
    }
    return (int32_t) - (sum[0] + sum[1]);
}

static void
count_matrix(const Py_buffer *view, int is_float, Py_ssize_t rows, Py_ssize_t k, Py_ssize_t first,
             Py_ssize_t columns, const int32_t *plan, const double *edges, const float *edges32,
             int64_t *counts, uint16_t *slots)
{
    for (Py_ssize_t r = 0; r < rows; r++) {
        uint16_t *out = slots + r * columns + first;
        const int32_t *p = plan + 3 * first;
        for (Py_ssize_t j = 0; j < k; j++, p += 3) {
            Py_ssize_t c = first + j;
            int32_t s, bin;
            if (is_float) {
                float x = ((const float *)view->buf)[r * k + j];
                bin = bin_f32(x, edges32 + c * WIDTH);
                s = x != x ? p[2] : p[1] + (bin < p[0] ? bin : p[0]);
            } else {
                double x = ((const double *)view->buf)[r * k + j];
                bin = bin_f64(x, edges + c * WIDTH);
                s = x != x ? p[2] : p[1] + (bin < p[0] ? bin : p[0]);
            }
            counts[s]++;
            out[j] = (uint16_t)s;
        }
    }
}

/* Where a call bins to: the plan and edges, and the open chunk's count vector and slots. */
typedef struct {
    const int32_t *plan;
    const double *e64;
    const float *e32;
    int64_t *counts;
    uint16_t *slots;
    Py_ssize_t columns, capacity; /* capacity: rows the slots have room for */
} Target;

/* Each plan row (edges, first bin's slot, missing slot) must point inside a count vector of `size`. */
static int
check_plan(const int32_t *p, Py_ssize_t columns, Py_ssize_t size)
{
    if (columns == 0 || size > UINT16_MAX + 1) {
        PyErr_SetString(PyExc_ValueError, "bin_batch: no columns, or more slots than uint16 holds");
        return -1;
    }
    for (Py_ssize_t c = 0; c < columns; c++) {
        if (p[3 * c] < 0 || p[3 * c] >= WIDTH || p[3 * c + 1] < 0 || p[3 * c + 1] + p[3 * c] >= size ||
            p[3 * c + 2] < 0 || p[3 * c + 2] >= size) {
            PyErr_SetString(PyExc_ValueError, "bin_batch: a plan row points outside the counts");
            return -1;
        }
    }
    return 0;
}

static Py_ssize_t
plan_columns(Py_ssize_t plan_len, Py_ssize_t edges_len, Py_ssize_t edges32_len)
{
    Py_ssize_t columns = plan_len / (3 * (Py_ssize_t)sizeof(int32_t));
    if (columns == 0 || plan_len != columns * 3 * (Py_ssize_t)sizeof(int32_t) ||
        edges_len != columns * WIDTH * (Py_ssize_t)sizeof(double) || edges32_len != columns * WIDTH * (Py_ssize_t)sizeof(float)) {
        PyErr_SetString(PyExc_ValueError, "bin_batch: plan and edges do not describe the same columns");
        return -1;
    }
    return columns;
}

/* The buffers bin_batch and bin_batches look up for one call. */
typedef struct {
    Py_buffer plan, edges, edges32, counts, slots;
} Held;

static void
release_held(Held *h)
{
    if (h->plan.obj) PyBuffer_Release(&h->plan);
    if (h->edges.obj) PyBuffer_Release(&h->edges);
    if (h->edges32.obj) PyBuffer_Release(&h->edges32);
    if (h->counts.obj) PyBuffer_Release(&h->counts);
    if (h->slots.obj) PyBuffer_Release(&h->slots);
}

static int
hold_target(Held *h, Target *t, PyObject *plan, PyObject *edges, PyObject *edges32, PyObject *counts, PyObject *slots)
{
    memset(h, 0, sizeof(*h));
    if (PyObject_GetBuffer(plan, &h->plan, PyBUF_SIMPLE) < 0 || PyObject_GetBuffer(edges, &h->edges, PyBUF_SIMPLE) < 0 ||
        PyObject_GetBuffer(edges32, &h->edges32, PyBUF_SIMPLE) < 0 ||
        PyObject_GetBuffer(counts, &h->counts, PyBUF_WRITABLE) < 0 || PyObject_GetBuffer(slots, &h->slots, PyBUF_WRITABLE) < 0)
        return -1;
    Py_ssize_t columns = plan_columns(h->plan.len, h->edges.len, h->edges32.len);
    if (columns < 0 || check_plan((const int32_t *)h->plan.buf, columns, h->counts.len / (Py_ssize_t)sizeof(int64_t)) < 0)
        return -1;
    t->plan = (const int32_t *)h->plan.buf;
    t->e64 = (const double *)h->edges.buf;
    t->e32 = (const float *)h->edges32.buf;
    t->counts = (int64_t *)h->counts.buf;
    t->slots = (uint16_t *)h->slots.buf;
    t->columns = columns;
    t->capacity = h->slots.len / (columns * (Py_ssize_t)sizeof(uint16_t));
    return 0;
}

/* One served batch, its buffers looked up and checked against the plan's columns. */
typedef struct {
    Py_buffer matrix, outs[MAX_OUTPUTS];
    int is_float, out_float[MAX_OUTPUTS];
    Py_ssize_t rows, k, n_outs, held;
} Batch;

static void
close_batch(Batch *b)
{
    if (b->matrix.obj) PyBuffer_Release(&b->matrix);
    for (Py_ssize_t j = 0; j < b->held; j++)
        if (b->outs[j].obj) PyBuffer_Release(&b->outs[j]);
}

/* 0, or -1 with an exception set when it is not a batch the kernel takes (close_batch either way). */
static int
open_batch(Batch *b, PyObject *matrix, PyObject *const *outs, Py_ssize_t n_outs, Py_ssize_t columns)
{
    memset(b, 0, sizeof(*b));
    if (get_matrix(matrix, &b->matrix, &b->rows, &b->k, &b->is_float) < 0)
        return -1;
    b->n_outs = n_outs;
    if (n_outs > MAX_OUTPUTS || b->k + n_outs != columns) {
        PyErr_SetString(PyExc_ValueError, "bin_batch: the batch's columns do not match the plan");
        return -1;
    }
    for (; b->held < n_outs; ) {
        Py_ssize_t out_rows, out_k, j = b->held++;
        if (get_matrix(outs[j], &b->outs[j], &out_rows, &out_k, &b->out_float[j]) < 0)
            return -1;
        if (out_rows != b->rows || out_k != 1) {
            PyErr_SetString(PyExc_ValueError, "bin_batch: an output is not one value per row");
            return -1;
        }
    }
    return 0;
}

static void
count_batch(const Target *t, const Batch *b, Py_ssize_t row)
{
    uint16_t *sv = t->slots + row * t->columns;
    count_matrix(&b->matrix, b->is_float, b->rows, b->k, 0, t->columns, t->plan, t->e64, t->e32, t->counts, sv);
    for (Py_ssize_t j = 0; j < b->n_outs; j++)
        count_matrix(&b->outs[j], b->out_float[j], b->rows, 1, b->k + j, t->columns, t->plan, t->e64, t->e32,
                     t->counts, sv);
}

/* bin_batch(matrix, outputs, plan, edges, edges32, counts, slots, row) -> None

   matrix   (rows, k) float32/float64: the tracker's first k columns (the input features)
   outputs  tuple of (rows,) or (rows, 1) float32/float64 arrays: the next columns (one decision each)
   plan     bytes, int32 (columns, 3): per column its number of edges, first bin's slot and missing slot
   edges    bytes, float64 (columns, WIDTH): each column's edges ascending, padded with +inf
   edges32  bytes, float32 (columns, WIDTH): the same rounded up to float32, for float32 matrices
   counts   writable int64 buffer of the count vector, incremented
   slots    writable uint16 buffer (capacity, columns); row `row + r` gets the slots of the batch's row r

   Raises (TypeError, ValueError, BufferError) having changed nothing when the batch is not one it takes
   or the slots have no room for it. */
static PyObject *
bin_batch(PyObject *self, PyObject *args)
{
    PyObject *matrix, *outputs, *plan, *edges, *edges32, *counts, *slots, *result = NULL;
    Py_ssize_t row;
    Held h;
    Target t;
    Batch b;

    (void)self;
    if (!PyArg_ParseTuple(args, "OO!OOOOOn:bin_batch", &matrix, &PyTuple_Type, &outputs, &plan, &edges, &edges32,
                          &counts, &slots, &row))
        return NULL;
    if (hold_target(&h, &t, plan, edges, edges32, counts, slots) < 0) {
        release_held(&h);
        return NULL;
    }
    if (open_batch(&b, matrix, &PyTuple_GET_ITEM(outputs, 0), PyTuple_GET_SIZE(outputs), t.columns) == 0) {
        if (row < 0 || row + b.rows > t.capacity) {
            PyErr_SetString(PyExc_ValueError, "bin_batch: the slots have no room for the batch");
        } else {
            count_batch(&t, &b, row);
            result = Py_None;
            Py_INCREF(result);
        }
    }
    close_batch(&b);
    release_held(&h);
    return result;
}

/* bin_batches(batches, start, plan, edges, edges32, counts, slots, row) -> (done, rows, stop)

   batches  list of (matrix, outputs, ...) tuples as bin_batch takes them (items past the second are
            the caller's), binned in order from index `start`
   row      the slots row the first of them goes to; each next batch follows the last

   One call for the batches a feed queued since its last binning. Stops at the end of the list
   (stop 0), at a batch the slots have no room for (stop 1: open a new chunk and call again from
   `done`), or at a batch it does not take (stop 2, the error cleared: bin that one another way).
   Returns the index it stopped at and the rows binned; the batches before `done` are counted. */
static PyObject *
bin_batches(PyObject *self, PyObject *args)
{
    PyObject *batches, *plan, *edges, *edges32, *counts, *slots;
    Py_ssize_t start, row;
    Held h;
    Target t;

    (void)self;
    if (!PyArg_ParseTuple(args, "O!nOOOOOn:bin_batches", &PyList_Type, &batches, &start, &plan, &edges, &edges32,
                          &counts, &slots, &row))
        return NULL;
    if (hold_target(&h, &t, plan, edges, edges32, counts, slots) < 0) {
        release_held(&h);
        return NULL;
    }
    Py_ssize_t i = start < 0 ? 0 : start, binned = 0;
    int stop = 0;
    for (; i < PyList_GET_SIZE(batches); i++) {
        PyObject *item = PyList_GET_ITEM(batches, i), *outputs;
        Batch b;
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) < 2 || !PyTuple_Check(outputs = PyTuple_GET_ITEM(item, 1))) {
            stop = 2;
            break;
        }
        Py_INCREF(item); /* held while its buffers are looked up */
        if (open_batch(&b, PyTuple_GET_ITEM(item, 0), &PyTuple_GET_ITEM(outputs, 0), PyTuple_GET_SIZE(outputs),
                       t.columns) < 0) {
            PyErr_Clear();
            stop = 2;
        } else if (row + binned + b.rows > t.capacity) {
            stop = 1;
        } else {
            count_batch(&t, &b, row + binned);
            binned += b.rows;
        }
        close_batch(&b);
        Py_DECREF(item);
        if (stop)
            break;
    }
    release_held(&h);
    return Py_BuildValue("nni", i, binned, stop);
}

/* Tap: the drift tap the batcher calls after a batch ran, tap(inputs, outputs), when the kernel can
   bin the model's batches (one float input matrix of the monitored features, one value per row per
   profiled output). It bins the batch into its open chunk in this one call, with no Python frame on
   the way: a Python tap cost a few microseconds a batch in a busy server (cold caches), several
   times the binning itself. Sealed chunks wait for the feed's flush (`take`). A batch it does not
   take goes to `fallback(inputs, outputs)`, as do all batches after it. */
typedef struct {
    PyObject_HEAD
    PyObject *plan, *edges, *edges32; /* bytes, checked at construction */
    PyObject *fallback;
    PyObject *counts, *slots; /* the open chunk: bytearrays, or NULL before the first batch */
    PyObject *sealed;         /* list of (rows, counts, slots) */
    Py_ssize_t input_index, n_outputs, output_index[MAX_OUTPUTS];
    Py_ssize_t columns, size, chunk_rows, open_rows, capacity;
    Py_ssize_t pending_rows, max_pending_rows, dropped_rows;
    int refused;
} TapObject;

static int
tap_traverse(TapObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->fallback);
    Py_VISIT(self->sealed);
    return 0;
}

static int
tap_clear(TapObject *self)
{
    Py_CLEAR(self->fallback);
    Py_CLEAR(self->sealed);
    Py_CLEAR(self->counts);
    Py_CLEAR(self->slots);
    Py_CLEAR(self->plan);
    Py_CLEAR(self->edges);
    Py_CLEAR(self->edges32);
    return 0;
}

static void
tap_dealloc(TapObject *self)
{
    PyObject_GC_UnTrack(self);
    tap_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
tap_init(TapObject *self, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {"plan", "edges", "edges32", "size", "input_index", "output_indices", "chunk_rows",
                            "max_pending_rows", "fallback", NULL};
    PyObject *plan, *edges, *edges32, *outputs, *fallback;
    Py_ssize_t size, input_index, chunk_rows, max_pending;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "SSSnnO!nnO:Tap", names, &plan, &edges, &edges32, &size,
                                     &input_index, &PyTuple_Type, &outputs, &chunk_rows, &max_pending, &fallback))
        return -1;
    Py_ssize_t columns = plan_columns(PyBytes_GET_SIZE(plan), PyBytes_GET_SIZE(edges), PyBytes_GET_SIZE(edges32));
    if (columns < 0 || check_plan((const int32_t *)PyBytes_AS_STRING(plan), columns, size) < 0)
        return -1;
    if (PyTuple_GET_SIZE(outputs) > MAX_OUTPUTS || input_index < 0 || chunk_rows < 1 || max_pending < 0 ||
        !PyCallable_Check(fallback)) {
        PyErr_SetString(PyExc_ValueError, "Tap: bad output indices, input index, chunk rows, cap or fallback");
        return -1;
    }
    self->n_outputs = PyTuple_GET_SIZE(outputs);
    for (Py_ssize_t j = 0; j < self->n_outputs; j++) {
        self->output_index[j] = PyLong_AsSsize_t(PyTuple_GET_ITEM(outputs, j));
        if (self->output_index[j] < 0) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "Tap: output indices must be >= 0");
            return -1;
        }
    }
    tap_clear(self);
    if ((self->sealed = PyList_New(0)) == NULL)
        return -1;
    Py_INCREF(plan);
    Py_INCREF(edges);
    Py_INCREF(edges32);
    Py_INCREF(fallback);
    self->plan = plan;
    self->edges = edges;
    self->edges32 = edges32;
    self->fallback = fallback;
    self->columns = columns;
    self->size = size;
    self->input_index = input_index;
    self->chunk_rows = chunk_rows;
    self->max_pending_rows = max_pending;
    self->open_rows = self->capacity = self->pending_rows = self->dropped_rows = 0;
    self->refused = 0;
    return 0;
}

/* Move the open chunk, if it holds rows, to the sealed list. */
static int
tap_seal(TapObject *self)
{
    if (self->open_rows) {
        PyObject *chunk = Py_BuildValue("nOO", self->open_rows, self->counts, self->slots);
        if (chunk == NULL || PyList_Append(self->sealed, chunk) < 0) {
            Py_XDECREF(chunk);
            return -1;
        }
        Py_DECREF(chunk);
    }
    Py_CLEAR(self->counts);
    Py_CLEAR(self->slots);
    self->open_rows = self->capacity = 0;
    return 0;
}

static int
tap_open_chunk(TapObject *self, Py_ssize_t rows)
{
    if (tap_seal(self) < 0)
        return -1;
    Py_ssize_t capacity = rows > self->chunk_rows ? rows : self->chunk_rows;
    self->counts = PyByteArray_FromStringAndSize(NULL, self->size * (Py_ssize_t)sizeof(int64_t));
    self->slots = PyByteArray_FromStringAndSize(NULL, capacity * self->columns * (Py_ssize_t)sizeof(uint16_t));
    if (self->counts == NULL || self->slots == NULL) {
        Py_CLEAR(self->counts);
        Py_CLEAR(self->slots);
        return -1;
    }
    memset(PyByteArray_AS_STRING(self->counts), 0, PyByteArray_GET_SIZE(self->counts));
    memset(PyByteArray_AS_STRING(self->slots), 0, PyByteArray_GET_SIZE(self->slots));
    self->capacity = capacity;
    return 0;
}

static PyObject *
tap_call(TapObject *self, PyObject *args, PyObject *kwargs)
{
    PyObject *inputs, *outputs, *ins = NULL, *outs = NULL, *picked[MAX_OUTPUTS];
    Batch b;
    int taken = 0;

    if (self->refused)
        return PyObject_Call(self->fallback, args, kwargs);
    if (!PyArg_ParseTuple(args, "OO:Tap", &inputs, &outputs))
        return NULL;
    if ((ins = PySequence_Fast(inputs, "Tap: inputs must be a sequence")) == NULL ||
        (outs = PySequence_Fast(outputs, "Tap: outputs must be a sequence")) == NULL) {
        Py_XDECREF(ins);
        return NULL;
    }
    memset(&b, 0, sizeof(b));
    if (self->input_index < PySequence_Fast_GET_SIZE(ins)) {
        Py_ssize_t j = 0;
        for (; j < self->n_outputs && self->output_index[j] < PySequence_Fast_GET_SIZE(outs); j++)
            picked[j] = PySequence_Fast_GET_ITEM(outs, self->output_index[j]);
        if (j == self->n_outputs &&
            open_batch(&b, PySequence_Fast_GET_ITEM(ins, self->input_index), picked, j, self->columns) == 0)
            taken = 1;
        else
            PyErr_Clear();
    }
    PyObject *result = Py_None;
    if (!taken) { /* a version's batches share dtypes and shapes: the fallback counts this tap's from now on */
        close_batch(&b);
        Py_DECREF(ins);
        Py_DECREF(outs);
        self->refused = 1;
        return PyObject_Call(self->fallback, args, kwargs);
    }
    if (self->pending_rows + b.rows > self->max_pending_rows) {
        self->dropped_rows += b.rows; /* the flush is behind (its store is down): drop, and count */
    } else if (self->open_rows + b.rows > self->capacity && tap_open_chunk(self, b.rows) < 0) {
        result = NULL;
    } else {
        Target t = {(const int32_t *)PyBytes_AS_STRING(self->plan), (const double *)PyBytes_AS_STRING(self->edges),
                    (const float *)PyBytes_AS_STRING(self->edges32), (int64_t *)PyByteArray_AS_STRING(self->counts),
                    (uint16_t *)PyByteArray_AS_STRING(self->slots), self->columns, self->capacity};
        count_batch(&t, &b, self->open_rows);
        self->open_rows += b.rows;
        self->pending_rows += b.rows;
    }
    close_batch(&b);
    Py_DECREF(ins);
    Py_DECREF(outs);
    Py_XINCREF(result);
    return result;
}

static PyObject *
tap_take(TapObject *self, PyObject *unused)
{
    (void)unused;
    if (tap_seal(self) < 0)
        return NULL;
    PyObject *chunks = self->sealed, *fresh = PyList_New(0);
    if (fresh == NULL)
        return NULL;
    self->sealed = fresh;
    self->pending_rows = 0;
    return chunks;
}

static PyObject *
tap_get_pending(TapObject *self, void *closure)
{
    (void)closure;
    return PyLong_FromSsize_t(self->pending_rows);
}

static PyObject *
tap_get_dropped(TapObject *self, void *closure)
{
    (void)closure;
    return PyLong_FromSsize_t(self->dropped_rows);
}

static PyObject *
tap_get_refused(TapObject *self, void *closure)
{
    (void)closure;
    return PyBool_FromLong(self->refused);
}

static PyMethodDef tap_methods[] = {
    {"take", (PyCFunction)tap_take, METH_NOARGS,
     "take() -> list of (rows, counts, slots): the chunks binned since the last take, the open one sealed;\n"
     "counts is an int64 count vector and slots a uint16 (capacity, columns) matrix, both as bytearrays."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef tap_getset[] = {
    {"pending_rows", (getter)tap_get_pending, NULL, "Rows binned and not yet taken.", NULL},
    {"dropped_rows", (getter)tap_get_dropped, NULL, "Rows dropped as over max_pending_rows, ever.", NULL},
    {"refused", (getter)tap_get_refused, NULL, "Whether a batch was refused: the fallback takes them all.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject TapType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "monitoring._binning.Tap",
    .tp_basicsize = sizeof(TapObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Tap(plan, edges, edges32, size, input_index, output_indices, chunk_rows, max_pending_rows, fallback):\n"
              "the batcher's drift tap, tap(inputs, outputs), binning each batch in one C call (monitoring/_binning.c).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)tap_init,
    .tp_dealloc = (destructor)tap_dealloc,
    .tp_free = PyObject_GC_Del,
    .tp_traverse = (traverseproc)tap_traverse,
    .tp_clear = (inquiry)tap_clear,
    .tp_call = (ternaryfunc)tap_call,
    .tp_methods = tap_methods,
    .tp_getset = tap_getset,
};

static PyObject *
edge_width(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    return PyLong_FromLong(WIDTH);
}

static PyMethodDef methods[] = {
    {"edge_width", edge_width, METH_NOARGS, "edge_width(): the edges per column bin_batch takes (padded with +inf)."},
    {"bin_batch", bin_batch, METH_VARARGS,
     "bin_batch(matrix, outputs, plan, edges, edges32, counts, slots, row): count a served batch's values into their\n"
     "bins' slots and record each row's slots (see monitoring/_binning.c)."},
    {"bin_batches", bin_batches, METH_VARARGS,
     "bin_batches(batches, start, plan, edges, edges32, counts, slots, row) -> (done, rows, stop): bin_batch over a\n"
     "list of (matrix, outputs) from `start`, stopping at the end (0), a full chunk (1) or a batch it does not take (2)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_binning", "One-pass drift binning.", -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC
PyInit__binning(void)
{
    if (PyType_Ready(&TapType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&TapType);
    if (PyModule_AddObject(m, "Tap", (PyObject *)&TapType) < 0) {
        Py_DECREF(&TapType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
