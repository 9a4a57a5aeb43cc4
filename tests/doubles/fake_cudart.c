/*
 * A stand-in for libcudart (the CUDA runtime API) on machines without an NVIDIA GPU.
 *
 * It exports, with the CUDA runtime's C signatures, every function mrfs_edge.backends.cuda_memory
 * binds, so the ctypes binding runs unchanged against it (MRFS_EDGE_CUDART=<this .so>). "Device"
 * memory is host memory, so a TensorRT double can read and write device pointers with
 * ctypes.memmove. Where the fake checks something it models a behaviour the CUDA Runtime API
 * reference or the CUDA C++ Programming Guide documents; each check says which.
 *
 * Environment (read on the first call):
 *   FAKE_CUDART_DEVICES  number of devices (default 1); 0 models a machine with no GPU
 *                        (cudaGetDeviceCount returns cudaErrorNoDevice, as the runtime does).
 *   FAKE_CUDART_DRIVER   "insufficient" models a runtime newer than the installed driver (or no
 *                        driver): every call that needs the driver returns
 *                        cudaErrorInsufficientDriver (35), as libcudart does on a GPU-less x86 box.
 *
 * Two functions beyond CUDA's API exist for tests and doubles: fakeLaunchCopyKernel (a device
 * kernel stand-in, checked as kernel launches are) and fakeLiveAllocations.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef int cudaError_t;
typedef void *cudaStream_t;
typedef void *cudaGraph_t;
typedef void *cudaGraphExec_t;

enum {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInvalidMemcpyDirection = 21,
    cudaErrorInsufficientDriver = 35,
    cudaErrorNoDevice = 100,
    cudaErrorInvalidDevice = 101,
    cudaErrorInvalidResourceHandle = 400,
    cudaErrorIllegalState = 401,
    cudaErrorIllegalAddress = 700,
    cudaErrorStreamCaptureUnsupported = 900,
    cudaErrorStreamCaptureInvalidated = 901,
    cudaErrorStreamCaptureWrongThread = 908,
};

enum { HostToHost = 0, HostToDevice = 1, DeviceToHost = 2, DeviceToDevice = 3, Default = 4 };
enum { CaptureGlobal = 0, CaptureThreadLocal = 1, CaptureRelaxed = 2 };
enum { AttrComputeCapabilityMajor = 75, AttrComputeCapabilityMinor = 76 };

static const char DEVICE_NAME[] = "Fake Jetson Orin (host memory)";
static const int RUNTIME_VERSION = 12060;

/* ------------------------------------------------------------------------------ state */
typedef struct Allocation {
    char *base;
    size_t size;
    int device;   /* -1: pinned host memory */
    struct Allocation *next;
} Allocation;

typedef struct Step {   /* one recorded operation of a graph: a copy (kernel or memcpy) */
    void *dst;
    const void *src;
    size_t size;
    struct Step *next;
} Step;

typedef struct Stream {
    int device;
    int capturing;       /* 1 while between cudaStreamBeginCapture and cudaStreamEndCapture */
    int capture_mode;
    int invalidated;     /* a prohibited call happened during the capture */
    pthread_t capture_thread;
    Step *steps, **tail; /* what the capture recorded */
    struct Stream *next;
} Stream;

typedef struct Graph {
    Step *steps;
    int executable;      /* 0: cudaGraph_t, 1: cudaGraphExec_t */
    int device;
    struct Graph *next;
} Graph;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static int device_count = 1;
static int driver_insufficient = 0;
static Allocation *allocations = NULL;
static Stream *streams = NULL;
static Graph *graphs = NULL;
/* The runtime API binds a device to each host thread; a thread that never called cudaSetDevice
 * uses device 0 (Runtime API reference, cudaSetDevice / "Device Management"). */
static __thread int current_device = 0;

static void read_environment(void) {
    const char *devices = getenv("FAKE_CUDART_DEVICES");
    const char *driver = getenv("FAKE_CUDART_DRIVER");
    if (devices && *devices) device_count = atoi(devices);
    if (device_count < 0) device_count = 0;
    driver_insufficient = driver && strcmp(driver, "insufficient") == 0;
}

/* What every driver-backed call checks first: a driver, then a device. */
static cudaError_t ready(void) {
    pthread_once(&once, read_environment);
    if (driver_insufficient) return cudaErrorInsufficientDriver;
    if (device_count == 0) return cudaErrorNoDevice;
    return cudaSuccess;
}

static Allocation *find_allocation(const void *ptr, size_t size) {
    for (Allocation *a = allocations; a; a = a->next)
        if ((const char *)ptr >= a->base && (const char *)ptr + size <= a->base + a->size) return a;
    return NULL;
}

static Stream *find_stream(cudaStream_t handle) {
    for (Stream *s = streams; s; s = s->next)
        if ((void *)s == handle) return s;
    return NULL;
}

static Graph *find_graph(void *handle, int executable) {
    for (Graph *g = graphs; g; g = g->next)
        if ((void *)g == handle && g->executable == executable) return g;
    return NULL;
}

/* Under cudaStreamCaptureModeGlobal and ThreadLocal, "potentially unsafe API calls" (cudaMalloc,
 * cudaFree, synchronising calls, ...) made by the capturing thread are prohibited: they return
 * cudaErrorStreamCaptureUnsupported and invalidate the capture (Runtime API reference,
 * cudaStreamBeginCapture / cudaThreadExchangeStreamCaptureMode). Called with the lock held. */
static cudaError_t prohibited_during_capture(void) {
    cudaError_t result = cudaSuccess;
    for (Stream *s = streams; s; s = s->next)
        if (s->capturing && s->capture_mode != CaptureRelaxed &&
            (s->capture_mode == CaptureGlobal || pthread_equal(s->capture_thread, pthread_self()))) {
            s->invalidated = 1;
            result = cudaErrorStreamCaptureUnsupported;
        }
    return result;
}

static void free_steps(Step *step) {
    while (step) {
        Step *next = step->next;
        free(step);
        step = next;
    }
}

/* Work issued to a stream runs at once (the fake has no asynchrony), or is recorded into the
 * capture when the stream is capturing: captured work is not executed (Programming Guide,
 * "CUDA Graphs: Creating a Graph Using Stream Capture"). Called with the lock held. */
static cudaError_t enqueue_copy(Stream *stream, void *dst, const void *src, size_t size) {
    if (stream && stream->capturing) {
        Step *step = calloc(1, sizeof *step);
        if (!step) return cudaErrorMemoryAllocation;
        step->dst = dst, step->src = src, step->size = size;
        *stream->tail = step;
        stream->tail = &step->next;
        return cudaSuccess;
    }
    memmove(dst, src, size);
    return cudaSuccess;
}

/* ---------------------------------------------------------------------- version, errors */
cudaError_t cudaRuntimeGetVersion(int *version) {
    if (!version) return cudaErrorInvalidValue;
    *version = RUNTIME_VERSION;   /* answers without a driver, as the real runtime does */
    return cudaSuccess;
}

static const struct { int code; const char *name, *text; } ERRORS[] = {
    {cudaSuccess, "cudaSuccess", "no error"},
    {cudaErrorInvalidValue, "cudaErrorInvalidValue", "invalid argument"},
    {cudaErrorMemoryAllocation, "cudaErrorMemoryAllocation", "out of memory"},
    {cudaErrorInvalidMemcpyDirection, "cudaErrorInvalidMemcpyDirection", "invalid copy direction for memcpy"},
    {cudaErrorInsufficientDriver, "cudaErrorInsufficientDriver",
     "CUDA driver version is insufficient for CUDA runtime version"},
    {cudaErrorNoDevice, "cudaErrorNoDevice", "no CUDA-capable device is detected"},
    {cudaErrorInvalidDevice, "cudaErrorInvalidDevice", "invalid device ordinal"},
    {cudaErrorInvalidResourceHandle, "cudaErrorInvalidResourceHandle", "invalid resource handle"},
    {cudaErrorIllegalState, "cudaErrorIllegalState", "the operation cannot be performed in the present state"},
    {cudaErrorIllegalAddress, "cudaErrorIllegalAddress", "an illegal memory access was encountered"},
    {cudaErrorStreamCaptureUnsupported, "cudaErrorStreamCaptureUnsupported",
     "operation not permitted when stream is capturing"},
    {cudaErrorStreamCaptureInvalidated, "cudaErrorStreamCaptureInvalidated",
     "operation failed due to a previous error during capture"},
    {cudaErrorStreamCaptureWrongThread, "cudaErrorStreamCaptureWrongThread",
     "attempt to terminate a thread-local capture sequence from another thread"},
};

const char *cudaGetErrorName(cudaError_t error) {
    for (size_t i = 0; i < sizeof ERRORS / sizeof ERRORS[0]; i++)
        if (ERRORS[i].code == error) return ERRORS[i].name;
    return "unrecognized error code";
}

const char *cudaGetErrorString(cudaError_t error) {
    for (size_t i = 0; i < sizeof ERRORS / sizeof ERRORS[0]; i++)
        if (ERRORS[i].code == error) return ERRORS[i].text;
    return "unrecognized error code";
}

/* ------------------------------------------------------------------------------ devices */
cudaError_t cudaGetDeviceCount(int *count) {
    if (!count) return cudaErrorInvalidValue;
    cudaError_t status = ready();
    *count = status == cudaSuccess ? device_count : 0;
    return status;
}

cudaError_t cudaSetDevice(int device) {
    cudaError_t status = ready();
    if (status != cudaSuccess) return status;
    if (device < 0 || device >= device_count) return cudaErrorInvalidDevice;
    current_device = device;
    return cudaSuccess;
}

cudaError_t cudaGetDevice(int *device) {
    if (!device) return cudaErrorInvalidValue;
    cudaError_t status = ready();
    if (status != cudaSuccess) return status;
    *device = current_device;
    return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int *value, int attribute, int device) {
    cudaError_t status = ready();
    if (status != cudaSuccess) return status;
    if (!value) return cudaErrorInvalidValue;
    if (device < 0 || device >= device_count) return cudaErrorInvalidDevice;
    if (attribute == AttrComputeCapabilityMajor) *value = 8;
    else if (attribute == AttrComputeCapabilityMinor) *value = 7;
    else return cudaErrorInvalidValue;
    return cudaSuccess;
}

/* Only `name` (the first 256 bytes of struct cudaDeviceProp in every CUDA release) is written;
 * the rest of the caller's buffer is left as it was. */
cudaError_t cudaGetDeviceProperties(void *prop, int device) {
    cudaError_t status = ready();
    if (status != cudaSuccess) return status;
    if (!prop) return cudaErrorInvalidValue;
    if (device < 0 || device >= device_count) return cudaErrorInvalidDevice;
    memset(prop, 0, 256);
    memcpy(prop, DEVICE_NAME, sizeof DEVICE_NAME);
    return cudaSuccess;
}

/* ------------------------------------------------------------------------------- memory */
static cudaError_t allocate(void **ptr, size_t size, int device) {
    cudaError_t status = ready();
    if (status != cudaSuccess) return status;
    if (!ptr) return cudaErrorInvalidValue;
    pthread_mutex_lock(&lock);
    status = prohibited_during_capture();
    if (status == cudaSuccess && size == 0) *ptr = NULL;   /* cudaMalloc(0) succeeds with NULL */
    else if (status == cudaSuccess) {
        Allocation *a = calloc(1, sizeof *a);
        char *base = calloc(1, size);
        if (!a || !base) {
            free(a), free(base);
            status = cudaErrorMemoryAllocation;
        } else {
            a->base = base, a->size = size, a->device = device, a->next = allocations;
            allocations = a;
            *ptr = base;
        }
    }
    pthread_mutex_unlock(&lock);
    return status;
}

/* Freeing a pointer the runtime did not hand out (or of the other kind) is cudaErrorInvalidValue;
 * NULL is a no-op (Runtime API reference, cudaFree / cudaFreeHost). */
static cudaError_t release(void *ptr, int host) {
    cudaError_t status = ready();
    if (status != cudaSuccess || !ptr) return status;
    pthread_mutex_lock(&lock);
    status = prohibited_during_capture();
    if (status == cudaSuccess) {
        Allocation **link = &allocations;
        while (*link && !((*link)->base == ptr && ((*link)->device < 0) == host)) link = &(*link)->next;
        if (!*link) status = cudaErrorInvalidValue;
        else {
            Allocation *a = *link;
            *link = a->next;
            free(a->base);
            free(a);
        }
    }
    pthread_mutex_unlock(&lock);
    return status;
}

cudaError_t cudaMalloc(void **ptr, size_t size) { return allocate(ptr, size, current_device); }
cudaError_t cudaFree(void *ptr) { return release(ptr, 0); }
cudaError_t cudaMallocHost(void **ptr, size_t size) { return allocate(ptr, size, -1); }
cudaError_t cudaFreeHost(void *ptr) { return release(ptr, 1); }

/* An explicit direction must match the memory: the device side of a HostToDevice/DeviceToHost
 * copy has to lie inside one device allocation (else cudaErrorInvalidValue, as the runtime
 * answers for a host pointer given as device memory under unified addressing). A memcpy may be
 * issued to a stream of another device (Programming Guide, "Stream and Event Behavior"). */
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t count, int kind, cudaStream_t stream) {
    cudaError_t status = ready();
    if (status != cudaSuccess) return status;
    if (kind < HostToHost || kind > Default) return cudaErrorInvalidMemcpyDirection;
    if (count == 0) return cudaSuccess;
    if (!dst || !src) return cudaErrorInvalidValue;
    pthread_mutex_lock(&lock);
    Stream *s = find_stream(stream);
    Allocation *d = find_allocation(dst, count), *from = find_allocation(src, count);
    if (stream && !s) status = cudaErrorInvalidResourceHandle;
    else if ((kind == HostToDevice || kind == DeviceToDevice) && !(d && d->device >= 0)) status = cudaErrorInvalidValue;
    else if ((kind == DeviceToHost || kind == DeviceToDevice) && !(from && from->device >= 0)) status = cudaErrorInvalidValue;
    else status = enqueue_copy(s, dst, src, count);
    pthread_mutex_unlock(&lock);
    return status;
}

/* ------------------------------------------------------------------------------ streams */
cudaError_t cudaStreamCreate(cudaStream_t *stream) {
    cudaError_t status = ready();
    if (status != cudaSuccess) return status;
    if (!stream) return cudaErrorInvalidValue;
    Stream *s = calloc(1, sizeof *s);
    if (!s) return cudaErrorMemoryAllocation;
    s->device = current_device;   /* a stream belongs to the device current at its creation */
    s->tail = &s->steps;
    pthread_mutex_lock(&lock);
    s->next = streams;
    streams = s;
    pthread_mutex_unlock(&lock);
    *stream = s;
    return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
    cudaError_t status = ready();
    if (status != cudaSuccess) return status;
    pthread_mutex_lock(&lock);
    Stream **link = &streams;
    while (*link && (void *)*link != stream) link = &(*link)->next;
    if (!*link) status = cudaErrorInvalidResourceHandle;
    else {
        Stream *s = *link;
        *link = s->next;
        free_steps(s->steps);
        free(s);
    }
    pthread_mutex_unlock(&lock);
    return status;
}

/* Synchronising a capturing stream is prohibited and invalidates its capture (Programming Guide,
 * "CUDA Graphs: Prohibited and Unhandled Operations"). */
cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
    cudaError_t status = ready();
    if (status != cudaSuccess) return status;
    pthread_mutex_lock(&lock);
    Stream *s = find_stream(stream);
    if (stream && !s) status = cudaErrorInvalidResourceHandle;
    else if (s && s->capturing) {
        s->invalidated = 1;
        status = cudaErrorStreamCaptureUnsupported;
    }
    pthread_mutex_unlock(&lock);
    return status;
}

/* ------------------------------------------------------------------------------- graphs */
cudaError_t cudaStreamBeginCapture(cudaStream_t stream, int mode) {
    cudaError_t status = ready();
    if (status != cudaSuccess) return status;
    if (mode < CaptureGlobal || mode > CaptureRelaxed) return cudaErrorInvalidValue;
    pthread_mutex_lock(&lock);
    Stream *s = find_stream(stream);
    if (!s) status = stream ? cudaErrorInvalidResourceHandle : cudaErrorStreamCaptureUnsupported;
    else if (s->capturing) status = cudaErrorIllegalState;
    else {
        s->capturing = 1, s->capture_mode = mode, s->invalidated = 0;
        s->capture_thread = pthread_self();
        s->steps = NULL, s->tail = &s->steps;
    }
    pthread_mutex_unlock(&lock);
    return status;
}

/* Ends the capture: the recorded steps become a graph, or, when the capture was invalidated,
 * cudaErrorStreamCaptureInvalidated with *graph = NULL. A Global/ThreadLocal capture must be
 * ended by the thread that began it (cudaErrorStreamCaptureWrongThread); both as the Runtime API
 * reference documents for cudaStreamEndCapture. */
cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t *graph) {
    cudaError_t status = ready();
    if (status != cudaSuccess) return status;
    if (!graph) return cudaErrorInvalidValue;
    pthread_mutex_lock(&lock);
    Stream *s = find_stream(stream);
    if (!s) status = cudaErrorInvalidResourceHandle;
    else if (!s->capturing) status = cudaErrorIllegalState;
    else if (s->capture_mode != CaptureRelaxed && !pthread_equal(s->capture_thread, pthread_self()))
        status = cudaErrorStreamCaptureWrongThread;
    else {
        Step *steps = s->steps;
        s->capturing = 0, s->steps = NULL, s->tail = &s->steps;
        *graph = NULL;
        if (s->invalidated) {
            free_steps(steps);
            status = cudaErrorStreamCaptureInvalidated;
        } else {
            Graph *g = calloc(1, sizeof *g);
            if (!g) {
                free_steps(steps);
                status = cudaErrorMemoryAllocation;
            } else {
                g->steps = steps, g->device = s->device, g->next = graphs;
                graphs = g;
                *graph = g;
            }
        }
    }
    pthread_mutex_unlock(&lock);
    return status;
}

/* An executable graph is a snapshot of the graph: destroying the graph afterwards leaves it
 * intact (Runtime API reference, cudaGraphInstantiate). */
cudaError_t cudaGraphInstantiateWithFlags(cudaGraphExec_t *exec, cudaGraph_t graph, unsigned long long flags) {
    cudaError_t status = ready();
    if (status != cudaSuccess) return status;
    if (!exec || flags > 15) return cudaErrorInvalidValue;
    pthread_mutex_lock(&lock);
    Graph *g = find_graph(graph, 0);
    Graph *e = g ? calloc(1, sizeof *e) : NULL;
    if (!g) status = cudaErrorInvalidValue;
    else if (!e) status = cudaErrorMemoryAllocation;
    else {
        Step **tail = &e->steps;
        for (Step *step = g->steps; step && status == cudaSuccess; step = step->next) {
            Step *copy = malloc(sizeof *copy);
            if (!copy) status = cudaErrorMemoryAllocation;
            else {
                *copy = *step, copy->next = NULL;
                *tail = copy, tail = &copy->next;
            }
        }
        e->executable = 1, e->device = current_device, e->next = graphs;
        graphs = e;
        *exec = e;
    }
    pthread_mutex_unlock(&lock);
    return status;
}

cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
    cudaError_t status = ready();
    if (status != cudaSuccess) return status;
    pthread_mutex_lock(&lock);
    Graph *e = find_graph(exec, 1);
    Stream *s = find_stream(stream);
    if (!e) status = cudaErrorInvalidValue;
    else if (stream && !s) status = cudaErrorInvalidResourceHandle;
    else
        for (Step *step = e->steps; step && status == cudaSuccess; step = step->next)
            status = enqueue_copy(s, step->dst, step->src, step->size);
    pthread_mutex_unlock(&lock);
    return status;
}

static cudaError_t destroy_graph(void *handle, int executable) {
    cudaError_t status = ready();
    if (status != cudaSuccess) return status;
    pthread_mutex_lock(&lock);
    Graph **link = &graphs;
    while (*link && !((void *)*link == handle && (*link)->executable == executable)) link = &(*link)->next;
    if (!*link) status = cudaErrorInvalidValue;
    else {
        Graph *g = *link;
        *link = g->next;
        free_steps(g->steps);
        free(g);
    }
    pthread_mutex_unlock(&lock);
    return status;
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph) { return destroy_graph(graph, 0); }
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) { return destroy_graph(exec, 1); }

/* ------------------------------------------------------------------- for tests and doubles */
/* A device kernel that copies `size` bytes from `src` to `dst` (both device memory), standing in
 * for the kernels a TensorRT engine enqueues. Checked as kernel launches are: a launch into a
 * stream of another device than the calling thread's current one fails (Programming Guide,
 * "Stream and Event Behavior"); the fake answers cudaErrorInvalidResourceHandle. A kernel touching
 * memory of another device (no peer access) faults: cudaErrorIllegalAddress. */
cudaError_t fakeLaunchCopyKernel(void *dst, const void *src, size_t size, cudaStream_t stream) {
    cudaError_t status = ready();
    if (status != cudaSuccess) return status;
    pthread_mutex_lock(&lock);
    Stream *s = find_stream(stream);
    Allocation *d = find_allocation(dst, size), *from = find_allocation(src, size);
    if (stream && !s) status = cudaErrorInvalidResourceHandle;
    else if ((s ? s->device : current_device) != current_device) status = cudaErrorInvalidResourceHandle;
    else if (!d || !from || d->device != current_device || from->device != current_device)
        status = cudaErrorIllegalAddress;
    else status = enqueue_copy(s, dst, src, size);
    pthread_mutex_unlock(&lock);
    return status;
}

/* Device and pinned allocations not yet freed: lets a test see that a close() released them. */
int fakeLiveAllocations(void) {
    int live = 0;
    pthread_mutex_lock(&lock);
    for (Allocation *a = allocations; a; a = a->next) live++;
    pthread_mutex_unlock(&lock);
    return live;
}
