pub mod winrm;
