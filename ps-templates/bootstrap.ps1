# mailboxd bootstrap (fixed; sent with -EncodedCommand). It reads one UTF-8 JSON document
# from stdin - {"template": name, "script": text, "data": {...}} - and runs the script with
# the data as a parameter. Values never become script text; nothing touches the disk.
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
[Console]::OutputEncoding = [System.Text.UTF8Encoding]::new($false)
try {
    $reader = [System.IO.StreamReader]::new([Console]::OpenStandardInput(), [System.Text.UTF8Encoding]::new($false))
    $request = $reader.ReadToEnd() | ConvertFrom-Json
    $template = [ScriptBlock]::Create([string]$request.script)
    & $template -Data $request.data
    exit 0
} catch {
    [Console]::Out.WriteLine('MAILBOXD-FATAL ' + $_.Exception.Message)
    exit 3
}
