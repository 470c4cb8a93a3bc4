<#
.SYNOPSIS
  Build llama-cpp-python (the version pinned in pyproject.toml) on Windows with dynamically loaded
  ggml backends, so one installer carries the CPU variants and Vulkan (and, in a second flavour,
  CUDA) and ggml picks the best at run time. The Windows twin of build_llama.sh.

.DESCRIPTION
  Needs: Python 3.11 (py launcher), Visual Studio 2022 Build Tools with "Desktop development with
  C++" (MSVC, CMake, Ninja), Git is not needed. For -Backends vulkan: the LunarG Vulkan SDK
  (sets VULKAN_SDK; it brings the headers and glslc). For cuda: the CUDA Toolkit 12.x (sets CUDA_PATH).
  Run from a "x64 Native Tools" prompt, or let the script find MSVC through vswhere.
  Written and reviewed on Linux; NOT run by the project (no Windows machine): see packaging/README.md.

.EXAMPLE
  powershell -ExecutionPolicy Bypass -File packaging\llama\build_llama.ps1 -Backends cpu,vulkan
#>
param(
    [string[]] $Backends = @("cpu", "vulkan"),
    [string] $OutDir = "",
    [string] $BuildDir = "",
    [string] $CudaArchs = "75-real;80-real;86-real;89-real;90-real;120-virtual",
    [string] $Python = "python"
)
$ErrorActionPreference = "Stop"
Set-StrictMode -Version Latest
$Root = (Resolve-Path (Join-Path $PSScriptRoot "..\..")).Path

$pin = Select-String -Path (Join-Path $Root "pyproject.toml") -Pattern '"llama-cpp-python==([0-9.]+)"' | Select-Object -First 1
if (-not $pin) { throw "cannot read the llama-cpp-python pin from pyproject.toml" }
$Version = $pin.Matches[0].Groups[1].Value
$Tag = ($Backends -join "-")
if (-not $OutDir) { $OutDir = Join-Path $Root "packaging\build\wheels" }
if (-not $BuildDir) { $BuildDir = Join-Path $Root "packaging\build\llama-$Tag" }
New-Item -ItemType Directory -Force -Path $OutDir, $BuildDir | Out-Null

# Put MSVC on PATH when the script is not started from a developer prompt.
if (-not (Get-Command cl.exe -ErrorAction SilentlyContinue)) {
    $vswhere = Join-Path ${env:ProgramFiles(x86)} "Microsoft Visual Studio\Installer\vswhere.exe"
    if (-not (Test-Path $vswhere)) { throw "MSVC not found: install Visual Studio 2022 Build Tools (C++ workload)" }
    $vs = & $vswhere -latest -products * -requires Microsoft.VisualStudio.Component.VC.Tools.x86.x64 -property installationPath
    $vcvars = Join-Path $vs "VC\Auxiliary\Build\vcvars64.bat"
    # Import the environment vcvars64.bat sets up into this PowerShell session.
    cmd /c "`"$vcvars`" >nul && set" | ForEach-Object {
        if ($_ -match "^([^=]+)=(.*)$") { [Environment]::SetEnvironmentVariable($Matches[1], $Matches[2]) }
    }
}

# Same switches as build_llama.sh: backends as plugins, no -march=native, plugins next to llama.dll
# (CMAKE_INSTALL_BINDIR typed STRING so CMake keeps it relative to the wheel), no multimodal library,
# and the RPC backend (GPU workers).
$cmake = @("-DGGML_BACKEND_DL=ON", "-DGGML_NATIVE=OFF", "-DGGML_RPC=ON", "-DCMAKE_INSTALL_BINDIR:STRING=llama_cpp/lib", "-DLLAVA_BUILD=OFF",
           "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_TOOLS=OFF", "-DLLAMA_BUILD_SERVER=OFF")
foreach ($b in $Backends) {
    switch ($b) {
        "cpu"    { $cmake += "-DGGML_CPU_ALL_VARIANTS=ON" }  # MSVC builds the x86 variants it supports (no AMX/BF16)
        "vulkan" {
            if (-not $env:VULKAN_SDK) { throw "VULKAN_SDK is not set: install the LunarG Vulkan SDK" }
            $cmake += "-DGGML_VULKAN=ON"
        }
        "cuda"   {
            if (-not $env:CUDA_PATH) { throw "CUDA_PATH is not set: install the CUDA Toolkit" }
            $cmake += "-DGGML_CUDA=ON"
            $cmake += "-DCMAKE_CUDA_ARCHITECTURES=$CudaArchs"
        }
        default  { throw "unknown backend '$b' (cpu vulkan cuda)" }
    }
}

$sdistDir = Join-Path $Root "packaging\build\sdist"
$sdist = Join-Path $sdistDir "llama_cpp_python-$Version.tar.gz"
if (-not (Test-Path $sdist)) {
    & $Python -m pip download --no-deps --no-binary :all: -d $sdistDir "llama-cpp-python==$Version"
    if ($LASTEXITCODE) { throw "pip download failed" }
}

Write-Host "llama-cpp-python $Version, backends: $($Backends -join ' ')"
Write-Host "CMAKE_ARGS: $($cmake -join ' ')"
$env:CMAKE_ARGS = ($cmake -join " ")
$env:CMAKE_GENERATOR = "Ninja"  # scikit-build-core honours it; Ninja builds the CPU variants in parallel
$env:CMAKE_BUILD_PARALLEL_LEVEL = "$([Environment]::ProcessorCount)"
$start = Get-Date
& $Python -m pip wheel --no-deps -w $OutDir "--config-settings=build-dir=$BuildDir" "--config-settings=cmake.build-type=Release" $sdist
if ($LASTEXITCODE) { throw "building the wheel failed" }
$wheel = Get-ChildItem (Join-Path $OutDir "llama_cpp_python-$Version-*.whl") | Sort-Object LastWriteTime -Descending | Select-Object -First 1
$final = Join-Path (Join-Path $OutDir $Tag) $wheel.Name
New-Item -ItemType Directory -Force -Path (Split-Path $final) | Out-Null
Move-Item -Force $wheel.FullName $final
Write-Host ("built in {0:N0} s: {1}" -f ((Get-Date) - $start).TotalSeconds, $final)
& $Python -c "import sys, zipfile; print('\n'.join('  ' + n for n in sorted(zipfile.ZipFile(sys.argv[1]).namelist()) if '/lib/' in n))" $final
