# mailboxd warm-session bootstrap (fixed; sent with -EncodedCommand). It reads from stdin
# first the Exchange password on a line of its own (empty when there is none), then requests,
# one JSON document per line - {"id": ..., "template": name, "script": text, "data": {...}} -
# runs each as bootstrap.ps1 runs its one request, and ends each with "MAILBOXD-DONE <id>".
# The Exchange session the first request opens stays open for the next ones (session.warm in
# the data). Values never become script text; nothing touches the disk.
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
try {
    # Inside the try, as in bootstrap.ps1: Constrained Language Mode refuses these lines.
    [Console]::OutputEncoding = [System.Text.UTF8Encoding]::new($false)
    $reader = [System.IO.StreamReader]::new([Console]::OpenStandardInput(), [System.Text.UTF8Encoding]::new($false))
    # As in bootstrap.ps1: method calls only, which neither module logging nor script block
    # logging records; kept for the sessions this process opens.
    $secret = [System.Security.SecureString]::new()
    foreach ($c in [char[]]$reader.ReadLine()) { $secret.AppendChar($c) }
    $secret.MakeReadOnly()
} catch {
    Write-Output ('MAILBOXD-FATAL ' + $_.Exception.Message)
    exit 3
}
while ($null -ne ($line = $reader.ReadLine())) {
    if ($line.Trim() -eq '') { continue }
    $id = ''
    try {
        $request = $line | ConvertFrom-Json -ErrorAction Stop
        $id = [string]$request.id
        $template = [ScriptBlock]::Create([string]$request.script)
        & $template -Data $request.data -Secret $secret
    } catch {
        [Console]::Out.WriteLine('MAILBOXD-FATAL ' + $_.Exception.Message)
    }
    [Console]::Out.WriteLine('MAILBOXD-DONE ' + $id)
    [Console]::Out.Flush()
}
# stdin closed: remove the Exchange session now rather than leave it counting against
# PowerShellMaxConcurrency until its idle timeout.
if ($null -ne $global:MailboxdExchange) {
    Remove-PSSession -Session $global:MailboxdExchange -ErrorAction SilentlyContinue
}
exit 0
