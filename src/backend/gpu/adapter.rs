//! Adapter discovery: which GPUs wgpu can see, and which one a fit uses.

use crate::error::{Error, Result};

/// Setting this to `1` (or `true`) makes discovery find no adapter, to exercise the CPU paths.
pub const HIDE_ENV: &str = "LAKEMEANS_HIDE_GPU";

/// Whether the environment asks to hide every GPU adapter.
pub fn hidden_by_env() -> bool {
    std::env::var(HIDE_ENV).is_ok_and(|v| {
        let v = v.trim();
        v == "1" || v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("yes")
    })
}

/// One adapter as `lakemeans devices` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AdapterSummary {
    pub name: String,
    /// Graphics API (Vulkan, Metal, DirectX 12, OpenGL).
    pub backend: String,
    /// discrete, integrated, virtual, cpu (a software rasterizer) or other.
    pub device_type: String,
    pub driver: String,
    /// Whether the adapter can run compute shaders at all (old OpenGL drivers cannot).
    pub compute: bool,
    pub max_buffer_size: u64,
    pub max_storage_buffer_binding_size: u64,
    pub max_compute_workgroup_size: [u32; 3],
    pub max_compute_invocations_per_workgroup: u32,
    pub max_compute_workgroup_storage_size: u32,
}

/// Human name of a wgpu backend, as reported in [`crate::backend::DeviceInfo::api`].
pub fn api_name(b: wgpu::Backend) -> &'static str {
    match b {
        wgpu::Backend::Vulkan => "Vulkan",
        wgpu::Backend::Metal => "Metal",
        wgpu::Backend::Dx12 => "DirectX 12",
        wgpu::Backend::Gl => "OpenGL",
        wgpu::Backend::BrowserWebGpu => "WebGPU",
        wgpu::Backend::Noop => "none",
    }
}

fn type_name(t: wgpu::DeviceType) -> &'static str {
    match t {
        wgpu::DeviceType::DiscreteGpu => "discrete",
        wgpu::DeviceType::IntegratedGpu => "integrated",
        wgpu::DeviceType::VirtualGpu => "virtual",
        wgpu::DeviceType::Cpu => "cpu",
        wgpu::DeviceType::Other => "other",
    }
}

/// Keeps adapter probing from printing `error: XDG_RUNTIME_DIR is invalid or not set in the
/// environment.` on machines without a Wayland session.
///
/// Mesa's implicit Vulkan layer `VK_LAYER_MESA_device_select` connects to the Wayland display
/// on every enumeration, to put the compositor's GPU first, and libwayland prints that line
/// when it has no runtime directory to find the display in. lakemeans ranks adapters itself
/// and draws nothing, so when no Wayland display can be reached anyway (no absolute
/// `XDG_RUNTIME_DIR`, no absolute `WAYLAND_DISPLAY`) the layer is switched off with its own
/// documented variable, `NODEVICE_SELECT=1`, unless the user set that variable already.
///
/// # Safety
/// Sets an environment variable: call it before any other thread exists.
pub unsafe fn quiet_probing() {
    let absolute =
        |name: &str| std::env::var_os(name).is_some_and(|v| std::path::Path::new(&v).is_absolute());
    if !absolute("XDG_RUNTIME_DIR")
        && !absolute("WAYLAND_DISPLAY")
        && std::env::var_os("NODEVICE_SELECT").is_none()
    {
        // SAFETY: the caller guarantees no other thread exists.
        unsafe { std::env::set_var("NODEVICE_SELECT", "1") };
    }
}

/// Adapters of the native APIs (Vulkan, Metal, DirectX 12); `WGPU_BACKEND` can widen this,
/// e.g. to OpenGL, whose probing is noisy and whose compute support is patchy.
fn enumerate() -> Vec<wgpu::Adapter> {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    let backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::PRIMARY);
    desc.backends = backends;
    let instance = wgpu::Instance::new(desc);
    pollster::block_on(instance.enumerate_adapters(backends))
}

fn can_compute(a: &wgpu::Adapter) -> bool {
    a.get_downlevel_capabilities()
        .flags
        .contains(wgpu::DownlevelFlags::COMPUTE_SHADERS)
}

fn summary(a: &wgpu::Adapter) -> AdapterSummary {
    let info = a.get_info();
    let l = a.limits();
    AdapterSummary {
        name: info.name,
        backend: api_name(info.backend).to_string(),
        device_type: type_name(info.device_type).to_string(),
        driver: [info.driver, info.driver_info]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" "),
        compute: can_compute(a),
        max_buffer_size: l.max_buffer_size,
        max_storage_buffer_binding_size: l.max_storage_buffer_binding_size,
        max_compute_workgroup_size: [
            l.max_compute_workgroup_size_x,
            l.max_compute_workgroup_size_y,
            l.max_compute_workgroup_size_z,
        ],
        max_compute_invocations_per_workgroup: l.max_compute_invocations_per_workgroup,
        max_compute_workgroup_storage_size: l.max_compute_workgroup_storage_size,
    }
}

/// Every adapter wgpu can see (none when [`HIDE_ENV`] is set), best candidates first.
pub fn list_adapters() -> Vec<AdapterSummary> {
    if hidden_by_env() {
        return Vec::new();
    }
    let mut all = enumerate();
    all.sort_by_key(rank);
    all.iter().map(summary).collect()
}

/// Lower is better: real GPUs before software ones, native APIs before OpenGL.
fn rank(a: &wgpu::Adapter) -> (u8, u8) {
    let info = a.get_info();
    let ty = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    };
    let api = match info.backend {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
        _ => 1,
    };
    (ty, api)
}

/// How to choose among the adapters.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Case-insensitive substring of the adapter name.
    pub name: Option<String>,
    /// Pretend no adapter exists.
    pub hide: bool,
    /// Accept software rasterizers (lavapipe, WARP, SwiftShader). `--device auto` does not,
    /// since the CPU backend beats them; an explicit GPU request or `--adapter` does.
    pub allow_software: bool,
}

/// The adapter a fit runs on, or [`Error::NoAdapter`] saying why there is none.
pub fn select(sel: &Selection) -> Result<wgpu::Adapter> {
    if sel.hide {
        return Err(Error::NoAdapter(format!(
            "GPU adapters are hidden by {HIDE_ENV}"
        )));
    }
    let mut all: Vec<wgpu::Adapter> = enumerate().into_iter().filter(can_compute).collect();
    if all.is_empty() {
        return Err(Error::NoAdapter(
            "wgpu found no adapter with compute shaders (no Vulkan, Metal or DirectX 12 driver?)"
                .into(),
        ));
    }
    all.sort_by_key(rank);
    if let Some(want) = &sel.name {
        let needle = want.to_lowercase();
        let names: Vec<String> = all.iter().map(|a| a.get_info().name).collect();
        return match all
            .into_iter()
            .find(|a| a.get_info().name.to_lowercase().contains(&needle))
        {
            Some(a) => Ok(a),
            None => Err(Error::NoAdapter(format!(
                "no adapter name contains {want:?}; available: {}",
                names.join(", ")
            ))),
        };
    }
    let software = all.iter().map(|a| a.get_info().name).collect::<Vec<_>>();
    match all
        .into_iter()
        .find(|a| sel.allow_software || a.get_info().device_type != wgpu::DeviceType::Cpu)
    {
        Some(a) => Ok(a),
        None => Err(Error::SoftwareOnly(software)),
    }
}
