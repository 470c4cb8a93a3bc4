<#
.SYNOPSIS
  Build Harmonica for Windows: the PyInstaller one-folder app, then Harmonica-<version>-Setup.exe
  with NSIS 3 (packaging\windows\harmonica.nsi). Optionally signs both with signtool.

.DESCRIPTION
  Needs: Python 3.11 (python.org installer, "py" launcher), NSIS 3 (winget install NSIS.NSIS), and for a new
  llama.cpp build what packaging\llama\build_llama.ps1 lists (MSVC, Vulkan SDK).
  Signing (optional): WINDOWS_SIGN_THUMBPRINT (a code-signing certificate in the user's store) or
  WINDOWS_SIGN_PFX + WINDOWS_SIGN_PASSWORD; WINDOWS_SIGN_TIMESTAMP (default DigiCert's RFC 3161 URL).
  Written and reviewed on Linux; NOT run by the project (no Windows machine): see packaging/README.md.

.EXAMPLE
  powershell -ExecutionPolicy Bypass -File packaging\windows\build.ps1
  powershell -ExecutionPolicy Bypass -File packaging\windows\build.ps1 -LlamaWheel C:\wheels\llama_cpp_python-0.3.36-cp311-cp311-win_amd64.whl
#>
param(
    [string] $LlamaWheel = "",
    [string[]] $Backends = @("cpu", "vulkan"),
    [string] $Venv = "",
    [switch] $SkipInstaller
)
$ErrorActionPreference = "Stop"
Set-StrictMode -Version Latest
$Root = (Resolve-Path (Join-Path $PSScriptRoot "..\..")).Path
Set-Location $Root
if (-not $Venv) { $Venv = Join-Path $Root "packaging\build\venv-windows" }
$Py = Join-Path $Venv "Scripts\python.exe"
$Dist = Join-Path $Root "packaging\dist"
New-Item -ItemType Directory -Force -Path $Dist | Out-Null

function Invoke-Checked([string] $What, [scriptblock] $Block) {
    $global:LASTEXITCODE = 0
    & $Block | Out-Host  # shown, not returned: callers' return values stay clean
    if ($LASTEXITCODE) { throw "$What failed (exit $LASTEXITCODE)" }
}

function Find-Tool([string] $Name, [string[]] $Candidates) {
    # A tool on PATH, else the first candidate path that exists, else $null.
    $cmd = Get-Command $Name -ErrorAction SilentlyContinue | Select-Object -First 1
    if ($cmd) { return $cmd.Source }
    foreach ($c in $Candidates) { if ($c -and (Test-Path $c)) { return $c } }
    return $null
}

# --- 1. build environment ---------------------------------------------------------------------------
if (-not (Test-Path $Py)) {
    Invoke-Checked "creating the venv" { py -3.11 -m venv $Venv }
    Invoke-Checked "upgrading pip" { & $Py -m pip install -q --upgrade pip }
}
# One requirement per line (environment markers contain spaces); PowerShell collects the lines as an array.
$deps = @(& $Py -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(d for d in p['dependencies'] + p['optional-dependencies']['package'] if not d.startswith('llama-cpp-python')))")
Invoke-Checked "installing dependencies" { & $Py -m pip install -q @deps }

# --- 2. llama.cpp with dynamically loaded backends ---------------------------------------------------
$Tag = ($Backends -join "-")
if (-not $LlamaWheel) {
    $found = @(Get-ChildItem (Join-Path $Root "packaging\build\wheels\$Tag\llama_cpp_python-*.whl") -ErrorAction SilentlyContinue |
        Sort-Object LastWriteTime -Descending)
    if ($found.Count -gt 0) { $LlamaWheel = $found[0].FullName }
}
if (-not $LlamaWheel) {
    Write-Host "== building llama-cpp-python ($($Backends -join ' '))"
    & (Join-Path $Root "packaging\llama\build_llama.ps1") -Backends $Backends -Python $Py
    $LlamaWheel = (Get-ChildItem (Join-Path $Root "packaging\build\wheels\$Tag\llama_cpp_python-*.whl") |
        Sort-Object LastWriteTime -Descending | Select-Object -First 1).FullName
}
Write-Host "== llama-cpp-python wheel: $LlamaWheel"
Invoke-Checked "installing the llama.cpp wheel" { & $Py -m pip install -q --force-reinstall --no-deps $LlamaWheel }
Invoke-Checked "installing its dependencies" { & $Py -m pip install -q $LlamaWheel }

# --- 3. the app folder ------------------------------------------------------------------------------
$Version = & $Py -c "import sys; sys.path.insert(0, '.'); import app; print(app.__version__)"
Write-Host "== PyInstaller: Harmonica $Version"
$AppDir = Join-Path $Dist "Harmonica"
if (Test-Path $AppDir) { Remove-Item -Recurse -Force $AppDir }
Invoke-Checked "PyInstaller" {
    & $Py -m PyInstaller --noconfirm --clean --log-level WARN --distpath $Dist `
        --workpath (Join-Path $Root "packaging\build\pyinstaller-windows") (Join-Path $Root "packaging\harmonica.spec")
}
$Exe = Join-Path $AppDir "Harmonica.exe"
if (-not (Test-Path $Exe)) { throw "PyInstaller produced no $Exe" }

# --- 4. signing (optional) --------------------------------------------------------------------------
function Invoke-Sign([string] $File) {
    $ts = if ($env:WINDOWS_SIGN_TIMESTAMP) { $env:WINDOWS_SIGN_TIMESTAMP } else { "http://timestamp.digicert.com" }
    if ($env:WINDOWS_SIGN_THUMBPRINT) {
        $id = @("/sha1", $env:WINDOWS_SIGN_THUMBPRINT)
    } elseif ($env:WINDOWS_SIGN_PFX) {
        $id = @("/f", $env:WINDOWS_SIGN_PFX, "/p", $env:WINDOWS_SIGN_PASSWORD)
    } else {
        return $false
    }
    $signtool = Find-Tool "signtool.exe" @(Get-ChildItem "${env:ProgramFiles(x86)}\Windows Kits\10\bin\*\x64\signtool.exe" -ErrorAction SilentlyContinue |
        Sort-Object FullName -Descending | ForEach-Object { $_.FullName })
    if (-not $signtool) { throw "signtool.exe not found (install the Windows SDK)" }
    Invoke-Checked "signing $File" { & $signtool sign /fd SHA256 /tr $ts /td SHA256 @id $File }
    return $true
}
$signed = Invoke-Sign $Exe
if (-not $signed) { Write-Host "not signed: set WINDOWS_SIGN_THUMBPRINT or WINDOWS_SIGN_PFX (SmartScreen warns about unsigned installers)" }

# --- 5. Setup.exe -----------------------------------------------------------------------------------
if (-not $SkipInstaller) {
    $makensis = Find-Tool "makensis.exe" @("${env:ProgramFiles(x86)}\NSIS\makensis.exe", "$env:ProgramFiles\NSIS\makensis.exe")
    if (-not $makensis) { throw "NSIS 3 not found (winget install NSIS.NSIS)" }
    Write-Host "== NSIS"
    # Four numbers for the file's version resource: 1.2.3rc1 -> 1.2.3.0
    $nums = @([regex]::Matches($Version, "\d+") | Select-Object -First 3 | ForEach-Object { $_.Value })
    while ($nums.Count -lt 4) { $nums += "0" }
    $Setup = Join-Path $Dist "Harmonica-$Version-Setup.exe"
    Invoke-Checked "makensis" {
        & $makensis /V3 /WX "/DVERSION=$Version" "/DVI_VERSION=$($nums -join '.')" "/DSOURCE_DIR=$AppDir" "/DOUT_FILE=$Setup" `
            (Join-Path $Root "packaging\windows\harmonica.nsi")
    }
    if ($signed) { Invoke-Sign $Setup | Out-Null }
    Write-Host ("{0}: {1:N0} MB" -f $Setup, ((Get-Item $Setup).Length / 1MB))
}
Write-Host ("app folder: {0:N0} MB" -f ((Get-ChildItem -Recurse $AppDir | Measure-Object Length -Sum).Sum / 1MB))
