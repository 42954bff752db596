//! Host-side COM objects built with the `vst3` crate's `ComWrapper`/`Class`: the host
//! application, event lists, parameter queues and changes, and a memory stream for state.

use std::ffi::c_void;
use std::sync::Mutex;
use vst3::Steinberg::Vst::{
    Event, IEventList, IEventListTrait, IHostApplication, IHostApplicationTrait, IParamValueQueue,
    IParamValueQueueTrait, IParameterChanges, IParameterChangesTrait, ParamID, ParamValue,
    String128,
};
use vst3::Steinberg::{
    IBStream, IBStreamTrait, TUID, int32, int64, kInvalidArgument, kNotImplemented, kResultFalse,
    kResultOk, tresult,
};
use vst3::{Class, ComWrapper};

// ---------------------------------------------------------------------------------------------
// Host-side COM objects
// ---------------------------------------------------------------------------------------------

/// The host's `IHostApplication`: a name, and no objects to create.
pub struct HostApplication;

impl Class for HostApplication {
    type Interfaces = (IHostApplication,);
}

impl IHostApplicationTrait for HostApplication {
    unsafe fn getName(&self, name: *mut String128) -> tresult {
        if name.is_null() {
            return kInvalidArgument;
        }
        let out = unsafe { &mut *name };
        out.fill(0);
        for (d, s) in out.iter_mut().zip("staria-vst3-host-test".encode_utf16()) {
            *d = s;
        }
        kResultOk
    }

    unsafe fn createInstance(
        &self,
        _cid: *mut TUID,
        _iid: *mut TUID,
        obj: *mut *mut c_void,
    ) -> tresult {
        if !obj.is_null() {
            unsafe { *obj = std::ptr::null_mut() };
        }
        kNotImplemented
    }
}

/// An `IEventList`: the host fills it for input, the plugin appends to it for output. Its
/// capacity is reserved up front so `addEvent` never allocates inside `process()`.
pub struct EventList {
    events: Mutex<Vec<Event>>,
    capacity: usize,
}

impl EventList {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            events: Mutex::new(Vec::with_capacity(capacity)),
            capacity,
        }
    }
    pub fn clear(&self) {
        self.events.lock().unwrap().clear();
    }
    pub fn push(&self, e: Event) {
        self.events.lock().unwrap().push(e);
    }
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }
}

impl Class for EventList {
    type Interfaces = (IEventList,);
}

impl IEventListTrait for EventList {
    unsafe fn getEventCount(&self) -> int32 {
        self.events.lock().unwrap().len() as int32
    }

    unsafe fn getEvent(&self, index: int32, e: *mut Event) -> tresult {
        let events = self.events.lock().unwrap();
        match usize::try_from(index).ok().and_then(|i| events.get(i)) {
            Some(ev) if !e.is_null() => {
                unsafe { *e = *ev };
                kResultOk
            }
            _ => kInvalidArgument,
        }
    }

    unsafe fn addEvent(&self, e: *mut Event) -> tresult {
        if e.is_null() {
            return kInvalidArgument;
        }
        let mut events = self.events.lock().unwrap();
        if events.len() >= self.capacity {
            return kResultFalse;
        }
        events.push(unsafe { *e });
        kResultOk
    }
}

/// One parameter's changes in a block.
pub struct ParamQueue {
    pub(super) id: ParamID,
    pub(super) points: Vec<(int32, ParamValue)>,
}

impl Class for ParamQueue {
    type Interfaces = (IParamValueQueue,);
}

impl IParamValueQueueTrait for ParamQueue {
    unsafe fn getParameterId(&self) -> ParamID {
        self.id
    }
    unsafe fn getPointCount(&self) -> int32 {
        self.points.len() as int32
    }
    unsafe fn getPoint(
        &self,
        index: int32,
        sample_offset: *mut int32,
        value: *mut ParamValue,
    ) -> tresult {
        match usize::try_from(index).ok().and_then(|i| self.points.get(i)) {
            Some(&(o, v)) if !sample_offset.is_null() && !value.is_null() => {
                unsafe {
                    *sample_offset = o;
                    *value = v;
                }
                kResultOk
            }
            _ => kInvalidArgument,
        }
    }
    unsafe fn addPoint(&self, _o: int32, _v: ParamValue, _index: *mut int32) -> tresult {
        kResultFalse
    }
}

/// The input `IParameterChanges` of one block (read-only for the plugin).
pub struct ParamChanges {
    pub(super) queues: Vec<ComWrapper<ParamQueue>>,
}

impl Class for ParamChanges {
    type Interfaces = (IParameterChanges,);
}

impl IParameterChangesTrait for ParamChanges {
    unsafe fn getParameterCount(&self) -> int32 {
        self.queues.len() as int32
    }
    unsafe fn getParameterData(&self, index: int32) -> *mut IParamValueQueue {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.queues.get(i))
            .and_then(|q| q.as_com_ref::<IParamValueQueue>())
            .map_or(std::ptr::null_mut(), |r| r.as_ptr())
    }
    unsafe fn addParameterData(
        &self,
        _id: *const ParamID,
        _index: *mut int32,
    ) -> *mut IParamValueQueue {
        std::ptr::null_mut()
    }
}

/// A memory `IBStream` (for `getState` / `setState`).
pub struct MemStream {
    inner: Mutex<(Vec<u8>, usize)>,
}

impl MemStream {
    pub fn new(data: Vec<u8>) -> Self {
        Self {
            inner: Mutex::new((data, 0)),
        }
    }
    pub fn bytes(&self) -> Vec<u8> {
        self.inner.lock().unwrap().0.clone()
    }
}

impl Class for MemStream {
    type Interfaces = (IBStream,);
}

impl IBStreamTrait for MemStream {
    unsafe fn read(&self, buffer: *mut c_void, n: int32, read: *mut int32) -> tresult {
        let mut g = self.inner.lock().unwrap();
        let (data, pos) = &mut *g;
        let n = (n.max(0) as usize).min(data.len().saturating_sub(*pos));
        if n > 0 {
            unsafe { std::ptr::copy_nonoverlapping(data[*pos..].as_ptr(), buffer as *mut u8, n) };
        }
        *pos += n;
        if !read.is_null() {
            unsafe { *read = n as int32 };
        }
        kResultOk
    }
    unsafe fn write(&self, buffer: *mut c_void, n: int32, written: *mut int32) -> tresult {
        let mut g = self.inner.lock().unwrap();
        let (data, pos) = &mut *g;
        let n = n.max(0) as usize;
        let src = unsafe { std::slice::from_raw_parts(buffer as *const u8, n) };
        if data.len() < *pos + n {
            data.resize(*pos + n, 0);
        }
        data[*pos..*pos + n].copy_from_slice(src);
        *pos += n;
        if !written.is_null() {
            unsafe { *written = n as int32 };
        }
        kResultOk
    }
    unsafe fn seek(&self, to: int64, mode: int32, result: *mut int64) -> tresult {
        let mut g = self.inner.lock().unwrap();
        let (data, pos) = &mut *g;
        let base = match mode {
            0 => 0,
            1 => *pos as i64,
            2 => data.len() as i64,
            _ => return kInvalidArgument,
        };
        let new = (base + to).clamp(0, data.len() as i64);
        *pos = new as usize;
        if !result.is_null() {
            unsafe { *result = new };
        }
        kResultOk
    }
    unsafe fn tell(&self, out: *mut int64) -> tresult {
        let g = self.inner.lock().unwrap();
        if !out.is_null() {
            unsafe { *out = g.1 as int64 };
        }
        kResultOk
    }
}
