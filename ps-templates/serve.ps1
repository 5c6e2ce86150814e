# mailboxd warm-session bootstrap (fixed; sent with -EncodedCommand). It reads requests from
# stdin, one JSON document per line - {"id": ..., "template": name, "script": text, "data": {...}} -
# runs each as bootstrap.ps1 runs its one request, and ends each with "MAILBOXD-DONE <id>".
# The Exchange session the first request opens stays open for the next ones (session.warm in
# the data). Values never become script text; nothing touches the disk.
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
[Console]::OutputEncoding = [System.Text.UTF8Encoding]::new($false)
$reader = [System.IO.StreamReader]::new([Console]::OpenStandardInput(), [System.Text.UTF8Encoding]::new($false))
while ($null -ne ($line = $reader.ReadLine())) {
    if ($line.Trim() -eq '') { continue }
    $id = ''
    try {
        $request = $line | ConvertFrom-Json
        $id = [string]$request.id
        $template = [ScriptBlock]::Create([string]$request.script)
        & $template -Data $request.data
    } catch {
        [Console]::Out.WriteLine('MAILBOXD-FATAL ' + $_.Exception.Message)
    }
    [Console]::Out.WriteLine('MAILBOXD-DONE ' + $id)
    [Console]::Out.Flush()
}
exit 0
