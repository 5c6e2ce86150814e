# mailboxd bootstrap (fixed; sent with -EncodedCommand). It reads from stdin one line - the
# Exchange password, empty when there is none - then one UTF-8 JSON document -
# {"template": name, "script": text, "data": {...}} - and runs the script with the data and
# the password as parameters. Values never become script text; nothing touches the disk.
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
try {
    # Inside the try: under Constrained Language Mode this is the first line refused, and the
    # catch must still say so. There is no core-type way to read stdin or to run the template
    # text, so such a host cannot run mailboxd; the FATAL line lets `mailboxd check` say why.
    [Console]::OutputEncoding = [System.Text.UTF8Encoding]::new($false)
    $reader = [System.IO.StreamReader]::new([Console]::OpenStandardInput(), [System.Text.UTF8Encoding]::new($false))
    # The password becomes a SecureString through .NET method calls only: module logging
    # records every cmdlet's parameters and pipeline input (ConvertFrom-Json's,
    # ConvertTo-SecureString's), script block logging the script's text; neither records
    # the arguments of a method call.
    $secret = [System.Security.SecureString]::new()
    foreach ($c in [char[]]$reader.ReadLine()) { $secret.AppendChar($c) }
    $secret.MakeReadOnly()
    $request = $reader.ReadToEnd() | ConvertFrom-Json -ErrorAction Stop
    $template = [ScriptBlock]::Create([string]$request.script)
    & $template -Data $request.data -Secret $secret
    exit 0
} catch {
    # Write-Output, not [Console]::Out: a method call on a non-core type is itself refused in
    # Constrained Language Mode.
    Write-Output ('MAILBOXD-FATAL ' + $_.Exception.Message)
    exit 3
}
