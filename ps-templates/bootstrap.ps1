# mailboxd bootstrap (fixed; sent with -EncodedCommand). It reads one UTF-8 JSON document
# from stdin - {"template": name, "script": text, "data": {...}} - and runs the script with
# the data as a parameter. Values never become script text; nothing touches the disk.
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
try {
    # Inside the try: under Constrained Language Mode this is the first line refused, and the
    # catch must still say so. There is no core-type way to read stdin or to run the template
    # text, so such a host cannot run mailboxd; the FATAL line lets `mailboxd check` say why.
    [Console]::OutputEncoding = [System.Text.UTF8Encoding]::new($false)
    $reader = [System.IO.StreamReader]::new([Console]::OpenStandardInput(), [System.Text.UTF8Encoding]::new($false))
    $request = $reader.ReadToEnd() | ConvertFrom-Json -ErrorAction Stop
    $template = [ScriptBlock]::Create([string]$request.script)
    & $template -Data $request.data
    exit 0
} catch {
    # Write-Output, not [Console]::Out: a method call on a non-core type is itself refused in
    # Constrained Language Mode.
    Write-Output ('MAILBOXD-FATAL ' + $_.Exception.Message)
    exit 3
}
