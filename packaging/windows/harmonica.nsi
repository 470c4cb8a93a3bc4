; Harmonica's Windows installer: NSIS 3 with Modern UI 2, per-user (no administrator prompt).
; packaging\windows\build.ps1 runs it; by hand:
;   makensis /DVERSION=0.1.0 /DSOURCE_DIR=..\dist\Harmonica /DOUT_FILE=..\dist\Harmonica-0.1.0-Setup.exe harmonica.nsi
; Paths are relative to this file. makensis also runs on Linux (apt-get install nsis), which is how
; packaging/windows/check_nsis.sh compiles this script here against a stand-in app folder.

Unicode true
ManifestDPIAware true
SetCompressor /SOLID lzma
SetCompressorDictSize 64

!ifndef VERSION
  !error "pass /DVERSION=x.y.z (build.ps1 reads it from app.__version__)"
!endif
!ifndef VI_VERSION
  !define VI_VERSION "${VERSION}.0"  ; Windows wants four numbers; build.ps1 passes them for versions like 1.0rc1
!endif
!ifndef SOURCE_DIR
  !define SOURCE_DIR "..\dist\Harmonica"
!endif
!ifndef OUT_FILE
  !define OUT_FILE "..\dist\Harmonica-${VERSION}-Setup.exe"
!endif
!define APP "Harmonica"
!define EXE "Harmonica.exe"
!define REG_APP "Software\${APP}"
!define REG_UNINST "Software\Microsoft\Windows\CurrentVersion\Uninstall\${APP}"

Name "${APP}"
OutFile "${OUT_FILE}"
; Per-user programs folder: installing needs no administrator, updating needs no UAC prompt.
InstallDir "$LOCALAPPDATA\Programs\${APP}"
InstallDirRegKey HKCU "${REG_APP}" "InstallDir"
RequestExecutionLevel user
BrandingText "${APP} ${VERSION}"
ShowInstDetails nevershow
ShowUninstDetails nevershow

VIProductVersion "${VI_VERSION}"
VIFileVersion "${VI_VERSION}"
VIAddVersionKey "ProductName" "${APP}"
VIAddVersionKey "ProductVersion" "${VERSION}"
VIAddVersionKey "FileVersion" "${VERSION}"
VIAddVersionKey "FileDescription" "${APP} installer"
VIAddVersionKey "LegalCopyright" "Apache-2.0"

!include "MUI2.nsh"
!include "FileFunc.nsh"
!include "x64.nsh"

!define MUI_ICON "..\..\resources\icons\app\harmonica.ico"
!define MUI_UNICON "..\..\resources\icons\app\harmonica.ico"
!define MUI_ABORTWARNING
!define MUI_WELCOMEPAGE_TEXT "This installs ${APP} ${VERSION}: private, offline chat with gpt-oss models on this computer.$\r$\n$\r$\nNothing you type leaves the computer. After installing, open ${APP} and download or open a model file."
!define MUI_FINISHPAGE_RUN "$INSTDIR\${EXE}"
!define MUI_FINISHPAGE_RUN_TEXT "Start ${APP}"
!define MUI_COMPONENTSPAGE_NODESC

!insertmacro MUI_PAGE_WELCOME
!insertmacro MUI_PAGE_COMPONENTS
!insertmacro MUI_PAGE_DIRECTORY
!insertmacro MUI_PAGE_INSTFILES
!insertmacro MUI_PAGE_FINISH
!insertmacro MUI_UNPAGE_CONFIRM
!insertmacro MUI_UNPAGE_INSTFILES
!insertmacro MUI_LANGUAGE "English"

Function .onInit
  ${IfNot} ${RunningX64}
    MessageBox MB_ICONSTOP "${APP} needs a 64-bit version of Windows 10 or 11."
    Abort
  ${EndIf}
FunctionEnd

Section "${APP}" SecApp
  SectionIn RO
  SetOutPath "$INSTDIR"
  ; Closing a running copy first: files in use cannot be replaced.
  nsExec::Exec 'taskkill /IM "${EXE}" /F'
  Pop $0
  ; An update must not keep libraries the new version no longer ships (a stale ggml plugin would
  ; still be loaded by llama.cpp's backend scan).
  RMDir /r "$INSTDIR\_internal"
  File /r "${SOURCE_DIR}\*"
  WriteUninstaller "$INSTDIR\Uninstall.exe"
  CreateShortcut "$SMPROGRAMS\${APP}.lnk" "$INSTDIR\${EXE}" "" "$INSTDIR\${EXE}" 0

  WriteRegStr HKCU "${REG_APP}" "InstallDir" "$INSTDIR"
  WriteRegStr HKCU "${REG_UNINST}" "DisplayName" "${APP}"
  WriteRegStr HKCU "${REG_UNINST}" "DisplayVersion" "${VERSION}"
  WriteRegStr HKCU "${REG_UNINST}" "Publisher" "${APP}"
  WriteRegStr HKCU "${REG_UNINST}" "DisplayIcon" "$INSTDIR\${EXE},0"
  WriteRegStr HKCU "${REG_UNINST}" "InstallLocation" "$INSTDIR"
  WriteRegStr HKCU "${REG_UNINST}" "UninstallString" '"$INSTDIR\Uninstall.exe"'
  WriteRegStr HKCU "${REG_UNINST}" "QuietUninstallString" '"$INSTDIR\Uninstall.exe" /S'
  WriteRegDWORD HKCU "${REG_UNINST}" "NoModify" 1
  WriteRegDWORD HKCU "${REG_UNINST}" "NoRepair" 1
  ${GetSize} "$INSTDIR" "/S=0K" $0 $1 $2
  IntFmt $0 "0x%08X" $0
  WriteRegDWORD HKCU "${REG_UNINST}" "EstimatedSize" "$0"
SectionEnd

Section /o "Desktop shortcut" SecDesktop
  CreateShortcut "$DESKTOP\${APP}.lnk" "$INSTDIR\${EXE}" "" "$INSTDIR\${EXE}" 0
SectionEnd

Section "Uninstall"
  nsExec::Exec 'taskkill /IM "${EXE}" /F'
  Pop $0
  Delete "$SMPROGRAMS\${APP}.lnk"
  Delete "$DESKTOP\${APP}.lnk"
  ; Only what the installer put there: the folder may have been chosen by hand (e.g. Documents).
  RMDir /r "$INSTDIR\_internal"
  Delete "$INSTDIR\${EXE}"
  Delete "$INSTDIR\Uninstall.exe"
  RMDir "$INSTDIR"
  DeleteRegKey HKCU "${REG_UNINST}"
  DeleteRegKey HKCU "${REG_APP}"
  ; Conversations, settings and downloaded models live in the user's data folders and the
  ; Hugging Face cache; they are kept, so reinstalling loses nothing.
SectionEnd
